//! A GitHub-compatible HTTP server over a local git repository.

//! Which paths of a release ota installs: the `allow` and `ignore` lists.
//!
//! A release is a list of relative, `/`-separated file paths. The filter decides which of them
//! ota installs and owns: a path is included when `allow` is empty or one allow pattern matches
//! it, and no ignore pattern matches it — ignore wins. A path the filter excludes is not
//! installed.
//!
//! # Pattern forms
//!
//! | Pattern      | Form                                   | Matches                                  |
//! |--------------|----------------------------------------|------------------------------------------|
//! | `lib/`       | ends with `/`: directory prefix        | everything under `lib/`                   |
//! | `lib`        | no glob character: exact path          | the file `lib` and everything under `lib/`, not `library.py` |
//! | `*.md`       | glob without `/`: file name            | `README.md`, `docs/a.md` (any depth)     |
//! | `docs/*.md`  | glob with `/`: whole path              | `docs/a.md`, not `docs/x/a.md`           |
//! | `docs/**`    | `**` crosses directories               | everything under `docs/`                 |
//! | `test*/`     | glob ending with `/`: directories      | everything under any directory `test*`   |
//!
//! A glob is a pattern containing one of `*?[{`: `*` and `?` never match `/`, `**` matches
//! any number of directories, `[abc]` / `[!abc]` are character classes and `{a,b}` are
//! alternatives. To match one of those characters literally, put it in a class: `a[[]1].txt`
//! matches the file `a[1].txt`.
//!
//! Every form also matches everything below a directory it matches, as in `.gitignore`:
//! `*.d` matches `conf.d/x.conf`. A leading `./` is dropped and `.` and empty segments are
//! removed, so `./lib//x.py` is `lib/x.py`. Rejected: an empty pattern, an absolute one
//! (`/etc`), one with a `..` segment, one that names the whole directory (`.`), and one that
//! contains a backslash or a NUL character. Matching is case-sensitive.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use sha1::{Digest, Sha1};

/// Compiled `allow` / `ignore` patterns. A path is included when `allow` is empty or one
/// allow pattern matches it, and no ignore pattern matches it (ignore wins).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    allow: Matcher,
    ignore: Matcher,
}

impl Filter {
    /// Compiles the two lists; an error names the bad pattern, its list and its index.
    pub(crate) fn new(allow: &[String], ignore: &[String]) -> Result<Filter, FilterError> {
        Ok(Filter {
            allow: Matcher::new(PatternList::Allow, allow)?,
            ignore: Matcher::new(PatternList::Ignore, ignore)?,
        })
    }

    /// Whether `path` (relative, `/`-separated, as in a manifest) is installed.
    pub fn includes(&self, path: &str) -> bool {
        (self.allow.is_empty() || self.allow.matches(path)) && !self.ignore.matches(path)
    }

    /// The normalised allow patterns, as written after normalisation (`./lib` → `lib`).
    pub fn allow_patterns(&self) -> &[String] {
        &self.allow.patterns
    }

    /// The normalised ignore patterns.
    pub fn ignore_patterns(&self) -> &[String] {
        &self.ignore.patterns
    }

    /// A short, stable hex digest of the normalised patterns, so that the updater can notice
    /// that the filter changed since the last install. It does not depend on the order of the
    /// patterns or on duplicates; patterns that are spelled differently but match the same
    /// paths (`lib/**` and `lib/`) give different fingerprints, which only costs a re-check.
    ///
    /// The digest is the first 8 bytes of SHA-1 over `ota-filter-v1`, then for each list
    /// (`allow`, then `ignore`) a NUL, the list's name and, for each sorted, deduplicated
    /// pattern, a NUL and the pattern (NUL cannot occur in a pattern).
    pub(crate) fn fingerprint(&self) -> String {
        let mut hasher = Sha1::new();
        hasher.update(b"ota-filter-v1");
        for (name, matcher) in [("allow", &self.allow), ("ignore", &self.ignore)] {
            hasher.update(b"\0");
            hasher.update(name.as_bytes());
            let mut patterns: Vec<&str> = matcher.patterns.iter().map(String::as_str).collect();
            patterns.sort_unstable();
            patterns.dedup();
            for pattern in patterns {
                hasher.update(b"\0");
                hasher.update(pattern.as_bytes());
            }
        }
        hex::encode(&hasher.finalize()[..8])
    }
}

/// Which list a pattern came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternList {
    /// The `allow` list.
    Allow,
    /// The `ignore` list.
    Ignore,
}

impl std::fmt::Display for PatternList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatternList::Allow => "allow",
            PatternList::Ignore => "ignore",
        })
    }
}

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{list}[{index}]` holds the pattern {pattern:?}, which cannot be used: {reason}")]
pub struct FilterError {
    /// The list the pattern is in.
    pub list: PatternList,
    /// Its position in the list, from 0.
    pub index: usize,
    /// The pattern as written.
    pub pattern: String,
    /// Why it cannot be used, and what to write instead.
    pub reason: String,
}

impl FilterError {
    /// The config key of the pattern, e.g. `allow[2]`.
    pub fn key(&self) -> String {
        format!("{}[{}]", self.list, self.index)
    }
}

/// One compiled list.
#[derive(Clone, Default)]
struct Matcher {
    /// Normalised patterns, in the order written.
    patterns: Vec<String>,
    /// Literal paths: match the path itself or one of its ancestor directories.
    paths: Vec<String>,
    /// Literal directories (without the trailing `/`): match an ancestor directory.
    dirs: Vec<String>,
    /// Globs with a `/`: match the whole path or an ancestor directory.
    path_globs: GlobSet,
    /// Globs with a `/` ending with `/`: match an ancestor directory.
    dir_globs: GlobSet,
    /// Globs without a `/`: match the file name or the name of an ancestor directory.
    name_globs: GlobSet,
    /// Globs without a `/` ending with `/`: match the name of an ancestor directory.
    dir_name_globs: GlobSet,
}

impl std::fmt::Debug for Matcher {
    /// The patterns only: the compiled globs would print pages of automaton.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

impl Matcher {
    fn new(list: PatternList, patterns: &[String]) -> Result<Matcher, FilterError> {
        let mut matcher = Matcher::default();
        // path, dir, name, dir-name globs; and the index of the last pattern added to each,
        // to name in the unlikely case that a set is too large to compile.
        let mut builders: [GlobSetBuilder; 4] = std::array::from_fn(|_| GlobSetBuilder::new());
        let mut last = [0; 4];
        for (index, written) in patterns.iter().enumerate() {
            let error = |reason: String| FilterError {
                list,
                index,
                pattern: written.clone(),
                reason,
            };
            let pattern = Pattern::parse(written).map_err(error)?;
            if pattern.is_glob() {
                let glob = compile_glob(&pattern.body).map_err(error)?;
                let set = match (pattern.body.contains('/'), pattern.dir_only) {
                    (true, false) => 0,
                    (true, true) => 1,
                    (false, false) => 2,
                    (false, true) => 3,
                };
                builders[set].add(glob);
                last[set] = index;
            } else if pattern.dir_only {
                matcher.dirs.push(pattern.body.clone());
            } else {
                matcher.paths.push(pattern.body.clone());
            }
            matcher.patterns.push(pattern.normalised());
        }
        let [path_globs, dir_globs, name_globs, dir_name_globs] = [0, 1, 2, 3].map(|set| {
            builders[set].build().map_err(|err| FilterError {
                list,
                index: last[set],
                pattern: patterns[last[set]].clone(),
                reason: format!(
                    "together with the globs before it, it is too complex to compile \
                         ({}); use fewer or simpler globs",
                    err.kind()
                ),
            })
        });
        matcher.path_globs = path_globs?;
        matcher.dir_globs = dir_globs?;
        matcher.name_globs = name_globs?;
        matcher.dir_name_globs = dir_name_globs?;
        Ok(matcher)
    }

    fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn matches(&self, path: &str) -> bool {
        // Ancestor directories first (`a`, `a/b` for `a/b/c`), then the path itself.
        let mut name_start = 0;
        for (end, _) in path.match_indices('/') {
            let ancestor = &path[..end];
            let name = &path[name_start..end];
            if self.matches_dir(ancestor, name) || self.matches_entry(ancestor, name) {
                return true;
            }
            name_start = end + 1;
        }
        self.matches_entry(path, &path[name_start..])
    }

    /// Patterns that match a path and everything below it.
    fn matches_entry(&self, path: &str, name: &str) -> bool {
        self.paths.iter().any(|p| p == path)
            || (!self.path_globs.is_empty() && self.path_globs.is_match(path))
            || (!self.name_globs.is_empty() && self.name_globs.is_match(name))
    }

    /// Patterns that match only directories (written with a trailing `/`).
    fn matches_dir(&self, dir: &str, name: &str) -> bool {
        self.dirs.iter().any(|d| d == dir)
            || (!self.dir_globs.is_empty() && self.dir_globs.is_match(dir))
            || (!self.dir_name_globs.is_empty() && self.dir_name_globs.is_match(name))
    }
}

/// A pattern after normalisation.
struct Pattern {
    /// Without the trailing `/`; never empty.
    body: String,
    /// Written with a trailing `/`: matches only what is under a directory.
    dir_only: bool,
}

impl Pattern {
    fn parse(written: &str) -> Result<Pattern, String> {
        if written.is_empty() {
            return Err(
                "it is empty; remove it (an empty `allow` list already means \
                        every path)"
                    .to_owned(),
            );
        }
        if written.contains('\0') {
            return Err("it contains a NUL character; remove it".to_owned());
        }
        if written.contains('\\') {
            return Err(
                "it contains a backslash; separate directories with `/`, and put a \
                        glob character in brackets to match it literally (`[*]`)"
                    .to_owned(),
            );
        }
        if written.starts_with('/') {
            return Err(format!(
                "it is absolute; patterns are relative to target_dir, so write {:?}",
                written.trim_start_matches('/')
            ));
        }
        let dir_only = written.ends_with('/');
        let mut segments = Vec::new();
        for segment in written.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    return Err("it has a `..` segment; patterns cannot reach outside \
                                target_dir"
                        .to_owned());
                }
                _ => segments.push(segment),
            }
        }
        if segments.is_empty() {
            return Err(
                "it names the whole target directory; leave `allow` empty to \
                        install every path"
                    .to_owned(),
            );
        }
        Ok(Pattern {
            body: segments.join("/"),
            dir_only,
        })
    }

    fn is_glob(&self) -> bool {
        self.body.contains(['*', '?', '[', '{'])
    }

    fn normalised(&self) -> String {
        if self.dir_only {
            format!("{}/", self.body)
        } else {
            self.body.clone()
        }
    }
}

fn compile_glob(body: &str) -> Result<Glob, String> {
    GlobBuilder::new(body)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map_err(|err| format!("it is not a valid glob: {}", err.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], ignore: &[&str]) -> Filter {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filter::new(&own(allow), &own(ignore)).unwrap()
    }

    fn error(allow: &[&str]) -> FilterError {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Filter::new(&allow, &[]).unwrap_err()
    }

    #[test]
    fn empty_filter_includes_everything() {
        let f = filter(&[], &[]);
        assert!(f.includes("main.py"));
        assert!(f.includes("a/b/c.txt"));
    }

    #[test]
    fn directory_prefix() {
        let f = filter(&["lib/"], &[]);
        assert!(f.includes("lib/x.py"));
        assert!(f.includes("lib/sub/y.py"));
        assert!(!f.includes("lib"), "a file named lib is not under lib/");
        assert!(!f.includes("library.py"));
        assert!(
            !f.includes("src/lib/x.py"),
            "a literal prefix is anchored at the root"
        );
    }

    #[test]
    fn nested_directory_prefix() {
        let f = filter(&["app/static/"], &[]);
        assert!(f.includes("app/static/a.css"));
        assert!(!f.includes("app/main.py"));
        assert!(!f.includes("app/staticx/a.css"));
    }

    #[test]
    fn exact_path_matches_itself_and_below() {
        let f = filter(&["lib", "main.py"], &[]);
        assert!(f.includes("lib"));
        assert!(f.includes("lib/x.py"));
        assert!(f.includes("main.py"));
        assert!(!f.includes("library.py"));
        assert!(!f.includes("main.pyc"));
        assert!(!f.includes("sub/main.py"));
    }

    #[test]
    fn glob_without_slash_matches_file_name_at_any_depth() {
        let f = filter(&[], &["*.md"]);
        assert!(!f.includes("README.md"));
        assert!(!f.includes("docs/a.md"));
        assert!(!f.includes("docs/deep/er/a.md"));
        assert!(f.includes("docs/a.txt"));
        assert!(f.includes("md"));
    }

    #[test]
    fn glob_without_slash_matches_directories_too() {
        let f = filter(&["*.d"], &[]);
        assert!(f.includes("conf.d/x.conf"));
        assert!(f.includes("etc/conf.d/x.conf"));
        assert!(!f.includes("etc/conf/x.conf"));
    }

    #[test]
    fn glob_with_slash_matches_whole_path() {
        let f = filter(&["docs/*.md"], &[]);
        assert!(f.includes("docs/a.md"));
        assert!(!f.includes("docs/x/a.md"), "* does not cross /");
        assert!(!f.includes("a.md"));
        assert!(!f.includes("other/docs/a.md"));
    }

    #[test]
    fn double_star_crosses_directories() {
        let f = filter(&["docs/**/*.md"], &[]);
        assert!(f.includes("docs/a.md"));
        assert!(f.includes("docs/x/y/a.md"));
        assert!(!f.includes("docs/a.txt"));

        let f = filter(&["docs/**"], &[]);
        assert!(f.includes("docs/a"));
        assert!(f.includes("docs/x/y/z"));
        assert!(!f.includes("docsx/a"));

        let f = filter(&["**/tests/*.py"], &[]);
        assert!(f.includes("tests/a.py"));
        assert!(f.includes("pkg/sub/tests/a.py"));
        assert!(!f.includes("pkg/tests.py"));
    }

    #[test]
    fn question_mark_class_and_alternatives() {
        let f = filter(&["v?.txt", "data[0-9].bin", "*.{py,toml}"], &[]);
        assert!(f.includes("v1.txt"));
        assert!(!f.includes("v10.txt"));
        assert!(f.includes("data7.bin"));
        assert!(!f.includes("datax.bin"));
        assert!(f.includes("a/b.py"));
        assert!(f.includes("Cargo.toml"));
        assert!(!f.includes("a.json"));
    }

    #[test]
    fn bracket_matches_a_glob_character_literally() {
        let f = filter(&["a[[]1].txt"], &[]);
        assert!(f.includes("a[1].txt"));
        assert!(!f.includes("a1.txt"));
    }

    #[test]
    fn glob_directory_forms() {
        let f = filter(&[], &["test*/"]);
        assert!(!f.includes("tests/a.py"));
        assert!(!f.includes("pkg/testdata/x"));
        assert!(f.includes("tests.py"), "a file is not a directory");

        let f = filter(&[], &["pkg/*/"]);
        assert!(!f.includes("pkg/a/x"));
        assert!(f.includes("pkg/file"));
        assert!(f.includes("other/a/x"));
    }

    #[test]
    fn glob_with_slash_matches_below_matched_directory() {
        let f = filter(&["src/*"], &[]);
        assert!(f.includes("src/a.rs"));
        assert!(f.includes("src/mod/b.rs"));
        assert!(!f.includes("src"));
    }

    #[test]
    fn ignore_wins_over_allow() {
        let f = filter(&["lib/", "main.py"], &["lib/tests/", "*.pyc", "main.py"]);
        assert!(f.includes("lib/x.py"));
        assert!(!f.includes("lib/tests/t.py"));
        assert!(!f.includes("lib/x.pyc"));
        assert!(!f.includes("main.py"));
        assert!(!f.includes("other.py"), "not allowed");
    }

    #[test]
    fn ignore_alone_excludes_from_everything() {
        let f = filter(&[], &["tests/"]);
        assert!(f.includes("main.py"));
        assert!(!f.includes("tests/a.py"));
    }

    #[test]
    fn leading_dot_slash_and_empty_segments_are_normalised() {
        let f = filter(&["./lib/", "././main.py", "a//b/./c"], &[]);
        assert!(f.includes("lib/x.py"));
        assert!(f.includes("main.py"));
        assert!(f.includes("a/b/c"));
        assert_eq!(f.allow_patterns(), ["lib/", "main.py", "a/b/c"]);
    }

    #[test]
    fn debug_shows_the_patterns() {
        let f = filter(&["lib/", "*.py"], &["tests/"]);
        assert_eq!(
            format!("{f:?}"),
            r#"Filter { allow: ["lib/", "*.py"], ignore: ["tests/"] }"#
        );
    }

    #[test]
    fn matching_is_case_sensitive() {
        let f = filter(&["Lib/", "*.MD"], &[]);
        assert!(f.includes("Lib/a"));
        assert!(!f.includes("lib/a"));
        assert!(!f.includes("a.md"));
    }

    #[test]
    fn rejects_empty() {
        assert!(error(&[""]).reason.contains("empty"));
    }

    #[test]
    fn rejects_absolute() {
        let err = error(&["/etc"]);
        assert!(err.reason.contains("absolute"), "{err}");
        assert!(
            err.reason.contains("\"etc\""),
            "suggests the relative form: {err}"
        );
    }

    #[test]
    fn rejects_parent_segments() {
        for p in ["..", "../x", "a/../b", "a/..", "a/../"] {
            assert!(error(&[p]).reason.contains(".."), "{p}");
        }
        // `..` inside a name is fine.
        filter(&["a..b", "..x"], &[]);
    }

    #[test]
    fn rejects_backslash_and_nul() {
        assert!(error(&["a\\b"]).reason.contains("backslash"));
        assert!(error(&["a\0b"]).reason.contains("NUL"));
    }

    #[test]
    fn rejects_the_whole_directory() {
        for p in [".", "./", ".//", "./."] {
            let err = error(&[p]);
            assert!(err.reason.contains("whole"), "{p}: {err}");
        }
    }

    #[test]
    fn rejects_bad_globs() {
        for p in ["a[", "{a,b", "[z-a]"] {
            let err = error(&[p]);
            assert!(err.reason.contains("not a valid glob"), "{p}: {err}");
        }
    }

    #[test]
    fn error_names_list_and_index() {
        let allow = vec!["ok/".to_string()];
        let ignore = vec!["fine".to_string(), "x".to_string(), "/abs".to_string()];
        let err = Filter::new(&allow, &ignore).unwrap_err();
        assert_eq!(err.list, PatternList::Ignore);
        assert_eq!(err.index, 2);
        assert_eq!(err.key(), "ignore[2]");
        assert_eq!(err.pattern, "/abs");
        let text = err.to_string();
        assert!(
            text.starts_with("`ignore[2]` holds the pattern \"/abs\""),
            "{text}"
        );
    }

    #[test]
    fn fingerprint_is_stable_and_order_insensitive() {
        let a = filter(&["lib/", "main.py"], &["*.md"]);
        let b = filter(&["./main.py", "lib/", "main.py"], &["*.md"]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert!(a.fingerprint().chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned so that a change of encoding is noticed: it would make every device
        // believe its filter changed.
        assert_eq!(
            filter(&[], &[]).fingerprint(),
            Filter::default().fingerprint()
        );
        assert_eq!(filter(&[], &[]).fingerprint(), EMPTY_FINGERPRINT);
    }

    const EMPTY_FINGERPRINT: &str = "2c63371934d6cbcb";

    #[test]
    fn fingerprint_changes_with_the_patterns() {
        let base = filter(&["lib/"], &[]).fingerprint();
        assert_ne!(base, filter(&["lib"], &[]).fingerprint());
        assert_ne!(base, filter(&[], &["lib/"]).fingerprint(), "list matters");
        assert_ne!(base, filter(&["lib/", "x"], &[]).fingerprint());
        assert_ne!(
            filter(&["a", "b"], &[]).fingerprint(),
            filter(&["ab"], &[]).fingerprint()
        );
    }
}

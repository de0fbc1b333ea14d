//! Recovery of interrupted updates whose release turns a file into a folder (found by the
//! soak, `docs/soak.md`).

use crate::util::{Device, GitRepo, read_tree, serve};

/// An update from a release where `conf` is a file to one where it is a folder, killed
/// after its journal was written but before `conf` moved: the undo looks at `conf/b`,
/// below a file. Recovery must read that as "not there" and roll back, not fail on
/// "Not a directory" at every run from then on.
#[test]
fn an_update_killed_before_a_file_became_a_folder_rolls_back() {
    let mut repo = GitRepo::new();
    repo.write("conf", "old conf\n")
        .write("main.py", "print(1)\n");
    repo.commit("v1");
    repo.tag("v1.0.0");
    let server = serve(repo.path());
    let device = Device::new(&server, "");
    device.ota_expect(&["update"], 0);
    let before = read_tree(&device.target);

    // The journal of the update to a release with `conf/a.toml` and `conf/b/c.toml`, as
    // ota writes it before its first operation; the staged files are there.
    let state = device.target.join(".ota");
    let commit = "1".repeat(40);
    let journal = format!(
        r#"{{"format":2,"txid":"1a2b-3c","release":{{"channel":"stable","ref":"v2.0.0","commit":"{commit}"}},"ops":[
            {{"op":"displace","path":"conf","slot":"0","kind":"file","keep":false}},
            {{"op":"create_dir","path":"conf"}},
            {{"op":"place","path":"conf/a.toml","slot":"1"}},
            {{"op":"create_dir","path":"conf/b"}},
            {{"op":"place","path":"conf/b/c.toml","slot":"2"}}]}}"#
    );
    std::fs::create_dir_all(state.join("stage/1a2b-3c")).unwrap();
    std::fs::create_dir_all(state.join("backup/1a2b-3c")).unwrap();
    std::fs::write(state.join("stage/1a2b-3c/1"), "a = 2\n").unwrap();
    std::fs::write(state.join("stage/1a2b-3c/2"), "c = 2\n").unwrap();
    std::fs::write(state.join("journal.json"), journal).unwrap();

    let out = device.ota_expect(&["recover"], 0);
    assert!(
        out.contains("undid the interrupted update to v2.0.0"),
        "{out}"
    );
    assert_eq!(read_tree(&device.target), before);
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    device.ota_expect(&["update"], 0);
}

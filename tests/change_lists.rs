//! Small metadata on a static site: `ota publish` names the release's file list as an object
//! and adds change lists from the channel's three newest releases; a device keeps the list
//! of the release it installed (`.ota/file-list.json`) and reads only the change from it.
//! Every shortcut falls back to the whole list, never to a wrong one: a kept list that was
//! damaged, a device further behind than the change lists reach, a change list altered on
//! the host. Real binary, `ota publish`, nginx behind a counting proxy.

use crate::util::nginx::Nginx;
use crate::util::proxy::Proxy;
use crate::util::publisher::{Publisher, read_manifest};
use crate::util::{Device, GitRepo};

/// A release of 300 files, enough that its file list dwarfs a change of one file.
const FILES: usize = 300;

struct Fleet {
    repo: GitRepo,
    publisher: Publisher,
    proxy: Proxy,
    device: Device,
    _nginx: Nginx,
    /// The last tag made.
    release: u32,
}

impl Fleet {
    /// Release 1 published, and a device that installed it.
    fn new() -> Fleet {
        let mut repo = GitRepo::new();
        for i in 0..FILES {
            repo.write(&format!("lib/m{i:03}.py"), format!("VALUE = {i}\n"));
        }
        repo.commit("r1");
        repo.tag("r1");
        let publisher = Publisher::new();
        let path = repo.path().to_str().unwrap().to_owned();
        publisher.publish(&["--repo", &path, "--ref", "r1"]);
        let nginx = Nginx::serve(&publisher.site);
        let proxy = Proxy::to(nginx.port());
        let key = format!("public_key = {:?}", publisher.public_key());
        let device = Device::on_site(&proxy.url(), &key);
        device.ota_expect(&["update"], 0);
        Fleet {
            repo,
            publisher,
            proxy,
            device,
            _nginx: nginx,
            release: 1,
        }
    }

    /// Publishes the next release, which changes one file.
    fn publish_next(&mut self) {
        self.release += 1;
        let n = self.release;
        self.repo
            .write(&format!("lib/m{:03}.py", n), format!("VALUE = 'r{n}'\n"));
        self.repo.commit(&format!("r{n}"));
        self.repo.tag(&format!("r{n}"));
        let path = self.repo.path().to_str().unwrap().to_owned();
        self.publisher
            .publish(&["--repo", &path, "--ref", &format!("r{n}")]);
    }

    /// `ota update` on the device: the request lines it sent and the bytes both ways; the
    /// tree is checked to be the newest release.
    fn update(&self) -> (Vec<String>, u64) {
        let before = self.proxy.requests().len();
        let bytes = self.proxy.totals().bytes();
        self.device.ota_expect(&["update"], 0);
        assert_eq!(
            self.device.tree(),
            self.repo.snapshot(&format!("r{}", self.release))
        );
        let asked = self.proxy.requests()[before..].to_vec();
        (asked, self.proxy.totals().bytes() - bytes)
    }

    /// The site path of the current manifest's file list object.
    fn file_list_object(&self) -> String {
        let manifest = read_manifest(&self.publisher.site.join("manifest.json"));
        let list = manifest.file_list.unwrap();
        ota::signed::object_path(&list.sha256, list.encoding)
    }

    /// The site paths of the current manifest's change list objects.
    fn change_objects(&self) -> Vec<String> {
        let manifest = read_manifest(&self.publisher.site.join("manifest.json"));
        (manifest.changes.iter())
            .map(|c| ota::signed::object_path(&c.object.sha256, c.object.encoding))
            .collect()
    }
}

fn asked_for(asked: &[String], object: &str) -> bool {
    asked.iter().any(|r| r.contains(object))
}

#[test]
fn an_update_reads_the_change_from_the_kept_file_list_not_the_whole_list() {
    let mut fleet = Fleet::new();
    let kept = fleet.device.target.join(".ota/file-list.json");
    assert!(kept.is_file(), "the install keeps the release's file list");
    // The whole update of a one-file change, for comparison below.
    let whole_list = std::fs::metadata(&kept).unwrap().len();

    fleet.publish_next();
    let (asked, bytes) = fleet.update();
    assert!(!asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
    assert!(asked_for(&asked, &fleet.change_objects()[0]), "{asked:?}");
    // Manifest, signature, change list, the changed file.
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(
        bytes * 4 < whole_list,
        "the update moved {bytes} bytes; the file list alone is {whole_list}"
    );
    eprintln!(
        "one file changed of {FILES}: {bytes} bytes both ways; the file list is {whole_list} bytes"
    );
}

#[test]
fn a_damaged_kept_list_costs_the_whole_list_not_a_wrong_one() {
    let mut fleet = Fleet::new();
    let kept = fleet.device.target.join(".ota/file-list.json");
    let mut bytes = std::fs::read(&kept).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&kept, bytes).unwrap();

    fleet.publish_next();
    let (asked, _) = fleet.update();
    assert!(asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
    assert!(!asked_for(&asked, &fleet.change_objects()[0]), "{asked:?}");
    // The new list is kept: the next update reads only its change again.
    fleet.publish_next();
    let (asked, _) = fleet.update();
    assert!(!asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
    assert!(asked_for(&asked, &fleet.change_objects()[0]), "{asked:?}");
}

#[test]
fn change_lists_reach_three_releases_back() {
    let mut fleet = Fleet::new();
    // Three releases behind: the change from r1 is still in the manifest.
    for _ in 0..3 {
        fleet.publish_next();
    }
    assert_eq!(fleet.change_objects().len(), 3);
    let (asked, _) = fleet.update();
    assert!(!asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
    assert_eq!(
        (fleet.change_objects().iter())
            .filter(|c| asked_for(&asked, c))
            .count(),
        1,
        "{asked:?}"
    );
    // Four behind: no change list reaches r4; the whole list.
    for _ in 0..4 {
        fleet.publish_next();
    }
    let (asked, _) = fleet.update();
    assert!(asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
}

#[test]
fn a_change_list_altered_on_the_host_is_not_used() {
    let mut fleet = Fleet::new();
    fleet.publish_next();
    // The host serves other bytes for the change list: a path the release does not have.
    let change = fleet.publisher.site.join(&fleet.change_objects()[0]);
    let mut bytes = std::fs::read(&change).unwrap();
    if change.extension().is_some_and(|e| e == "gz") {
        bytes = flate2_gunzip(&bytes);
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("lib/m002.py", "lib/evil.py");
        std::fs::write(&change, crate::util::site::gzip(text.as_bytes())).unwrap();
    } else {
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("lib/m002.py", "lib/evil.py");
        std::fs::write(&change, text).unwrap();
    }
    let (asked, _) = fleet.update();
    // Its digest differs from the signed one: the whole list is read instead, and the
    // release installs exactly.
    assert!(asked_for(&asked, &fleet.file_list_object()), "{asked:?}");
    assert!(!fleet.device.target.join("lib/evil.py").exists());
}

fn flate2_gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

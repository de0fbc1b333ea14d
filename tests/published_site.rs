//! What a device reads from a site `ota publish` wrote. A first install reads the release's
//! pack (one gzip tar) instead of one object per file. An update reads the change list from
//! the release it has: the manifest names the file list as an object, with change lists from
//! the channel's three newest releases, and a device keeps the list of the release it
//! installed (`.ota/file-list.json`). Every shortcut falls back to the long way, never to a
//! wrong result: a pack altered on the host, a kept list that was damaged, a device further
//! behind than the change lists reach, a change list altered on the host. Real binary,
//! `ota publish`, nginx behind a counting proxy.

use crate::util::nginx::Nginx;
use crate::util::proxy::Proxy;
use crate::util::publisher::{Publisher, read_manifest};
use crate::util::{Device, GitRepo};

/// A release of 300 files, enough that its file list dwarfs a change of one file.
const FILES: usize = 300;

struct Fleet {
    /// The requests of the first install.
    install: Vec<String>,
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
        Fleet::installed_after(|_| {})
    }

    /// Release 1 published, `tamper` done to the site, and a device that installed it.
    fn installed_after(tamper: impl FnOnce(&Publisher)) -> Fleet {
        let mut repo = GitRepo::new();
        for i in 0..FILES {
            repo.write(&format!("lib/m{i:03}.py"), format!("VALUE = {i}\n"));
        }
        let (publisher, nginx, proxy, device) = serve_r1(&mut repo);
        tamper(&publisher);
        device.ota_expect(&["update"], 0);
        assert_eq!(device.tree(), repo.snapshot("r1"));
        Fleet {
            install: proxy.requests(),
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

/// `repo`'s files committed and tagged r1, published, served by nginx behind a counting
/// proxy, and a device that follows the site (nothing installed yet).
fn serve_r1(repo: &mut GitRepo) -> (Publisher, Nginx, Proxy, Device) {
    repo.commit("r1");
    repo.tag("r1");
    let publisher = Publisher::new();
    let path = repo.path().to_str().unwrap().to_owned();
    publisher.publish(&["--repo", &path, "--ref", "r1"]);
    let nginx = Nginx::serve(&publisher.site);
    let proxy = Proxy::to(nginx.port());
    let key = format!("public_key = {:?}", publisher.public_key());
    let device = Device::on_site(&proxy.url(), &key);
    (publisher, nginx, proxy, device)
}

fn asked_for(asked: &[String], object: &str) -> bool {
    asked.iter().any(|r| r.contains(object))
}

/// The site path of the current manifest's pack.
fn pack(publisher: &Publisher) -> String {
    let manifest = read_manifest(&publisher.site.join("manifest.json"));
    ota::signed::pack_path(&manifest.file_list.unwrap().sha256)
}

#[test]
fn a_first_install_reads_the_pack_not_one_object_per_file() {
    let fleet = Fleet::new();
    // Manifest, signature, file list, pack: not one request per file.
    assert_eq!(fleet.install.len(), 4, "{:?}", fleet.install);
    assert!(asked_for(&fleet.install, &pack(&fleet.publisher)));
    assert!(
        !fleet
            .install
            .iter()
            .any(|r| r.contains("/objects/") && !r.contains(&fleet.file_list_object()))
    );
}

#[test]
fn a_pack_altered_on_the_host_costs_downloads_one_by_one_not_a_wrong_file() {
    let fleet = Fleet::installed_after(|publisher| {
        // Other bytes under the pack's name, no longer than the signed size (a longer pack
        // is not read at all): one file's content differs, its size the same.
        let path = publisher.site.join(pack(publisher));
        let signed = std::fs::metadata(&path).unwrap().len();
        let mut tar = Vec::new();
        let packed = std::fs::read(&path).unwrap();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut tar)
            .unwrap();
        let at = tar.windows(10).position(|w| w == b"VALUE = 7\n").unwrap();
        tar[at + 8] = b'0';
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let altered = gz.finish().unwrap();
        assert!(
            altered.len() as u64 <= signed,
            "{} > {signed}",
            altered.len()
        );
        std::fs::write(path, altered).unwrap();
    });
    // The altered entry is refused and downloaded alone; the tree is exact.
    let objects: Vec<&String> = (fleet.install.iter())
        .filter(|r| r.contains("/objects/") && !r.contains(&fleet.file_list_object()))
        .collect();
    assert_eq!(objects.len(), 1, "{:?}", fleet.install);
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

/// A site of two releases of a 300 KB binary whose second release changes 100 bytes in its
/// middle, and a device on the first.
struct Patched {
    repo: GitRepo,
    publisher: Publisher,
    proxy: Proxy,
    device: Device,
    _nginx: Nginx,
}

const BINARY: usize = 300_000;

fn patched() -> Patched {
    let mut repo = GitRepo::new();
    let old = crate::util::noise(BINARY, 5);
    repo.write("bin/app", &old)
        .write("main.py", "print('r1')\n");
    let (publisher, nginx, proxy, device) = serve_r1(&mut repo);
    device.ota_expect(&["update"], 0);
    let path = repo.path().to_str().unwrap().to_owned();
    let mut new = old;
    new[150_000..150_100].copy_from_slice(&[7u8; 100]);
    repo.write("bin/app", &new)
        .write("main.py", "print('r2')\n");
    repo.commit("r2");
    repo.tag("r2");
    let summary = publisher.publish(&["--repo", &path, "--ref", "r2"]);
    assert_eq!(summary["patches"], 1, "{summary}");
    Patched {
        repo,
        publisher,
        proxy,
        device,
        _nginx: nginx,
    }
}

impl Patched {
    /// The site path of r2's patch of `bin/app` from r1's.
    fn patch(&self) -> String {
        let manifest = read_manifest(&self.publisher.site.join("manifest.json"));
        let patch = manifest.patches[0];
        ota::signed::patch_path(&patch.from, &patch.to)
    }

    /// `ota update`: the tree must be r2's; returns the requests and the bytes both ways.
    fn update(&self) -> (Vec<String>, u64) {
        let before = self.proxy.requests().len();
        let bytes = self.proxy.totals().bytes();
        self.device.ota_expect(&["update"], 0);
        assert_eq!(self.device.tree(), self.repo.snapshot("r2"));
        let asked = self.proxy.requests()[before..].to_vec();
        (asked, self.proxy.totals().bytes() - bytes)
    }
}

#[test]
fn a_changed_binary_is_patched_from_the_installed_copy() {
    let site = patched();
    let (asked, bytes) = site.update();
    assert!(asked_for(&asked, &site.patch()), "{asked:?}");
    // Manifest, signature, change list, the patch, main.py: not the binary's object.
    assert_eq!(asked.len(), 5, "{asked:?}");
    assert!(
        bytes < 10_000,
        "{bytes} bytes for a 100-byte change of a {BINARY}-byte file"
    );
    eprintln!("a 100-byte change of a {BINARY}-byte file: the update moved {bytes} bytes");
}

#[test]
fn a_patch_that_makes_other_bytes_costs_the_whole_file_not_a_wrong_one() {
    let site = patched();
    // Another valid patch under its name, no longer than its signed size: it makes the
    // right size but not the signed SHA-256.
    let path = site.publisher.site.join(site.patch());
    let old = crate::util::noise(BINARY, 5);
    let mut wrong = old.clone();
    wrong[10] ^= 1;
    let mut patch = Vec::new();
    ota::delta::write_original(&mut std::io::Cursor::new(&old), &mut &wrong[..], &mut patch)
        .unwrap();
    let compressed = zstd::encode_all(&patch[..], 19).unwrap();
    let signed = std::fs::metadata(&path).unwrap().len();
    assert!(
        compressed.len() as u64 <= signed,
        "{} > {signed}",
        compressed.len()
    );
    std::fs::write(&path, compressed).unwrap();

    let (asked, _) = site.update();
    assert!(asked_for(&asked, &site.patch()), "{asked:?}");
    let object = asked.iter().filter(|r| r.contains("/objects/")).count();
    // The change list, main.py, and bin/app whole.
    assert_eq!(object, 3, "{asked:?}");
}

#[test]
fn a_file_changed_on_the_device_is_downloaded_whole_not_patched() {
    let site = patched();
    std::fs::write(site.device.target.join("bin/app"), b"edited by hand").unwrap();
    let (asked, _) = site.update();
    assert!(!asked_for(&asked, &site.patch()), "{asked:?}");
}

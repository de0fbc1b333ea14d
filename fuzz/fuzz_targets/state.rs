//! The files ota reads back from its state folder: `state.json` (the installed release and
//! the files ota owns), `last_error.json`, `cache.json` and `journal.json` (what recovery
//! executes). Every input is tried as each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota::{Cache, Installed, LastError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value read from disk is written back and read again unchanged.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let bytes = serde_json::to_vec_pretty(&value).expect("serialises");
    let back: T = serde_json::from_slice(&bytes).expect("reads back");
    assert_eq!(back, value);
}

/// A name ota joins under `stage/` or `backup/`: one plain component.
fn plain_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains(['/', '\0'])
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Installed>(data);
    round_trip::<LastError>(data);
    round_trip::<Cache>(data);

    let Ok(journal) = ota::testing::parse_journal(data) else {
        return;
    };
    // Written back, it reads back the same.
    assert_eq!(
        ota::testing::parse_journal(journal.as_bytes()),
        Ok(journal.clone())
    );
    // Recovery joins the transaction id and each slot under the state folder: a journal
    // it accepts cannot name anything outside `stage/<txid>/` and `backup/<txid>/`.
    let value: serde_json::Value = serde_json::from_str(&journal).expect("JSON");
    let txid = value["txid"].as_str().expect("txid");
    assert!(plain_name(txid), "txid {txid:?}");
    for op in value["ops"].as_array().expect("ops") {
        if let Some(slot) = op.get("slot") {
            let slot = slot.as_str().expect("slot");
            assert!(plain_name(slot), "slot {slot:?}");
        }
    }
});

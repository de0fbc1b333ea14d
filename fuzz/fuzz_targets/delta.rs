//! `ota::delta`: a hostile `OTADELTA` patch applied to an old file, and the generator's
//! patches round-tripped. The first byte picks the mode, the next two split the rest into
//! the old file and the patch (or the new file).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ota::delta::{self, Expected, MAX_COPY, MAX_DATA, Op, OriginalReader};
use sha2::Digest;

/// What a patch makes, by the format's text alone, all in memory; `None`: malformed.
fn reference(old: &[u8], patch: &[u8]) -> Option<Vec<u8>> {
    fn leb(p: &[u8], at: &mut usize) -> Option<u64> {
        let (mut value, mut shift) = (0u64, 0u32);
        loop {
            let b = *p.get(*at)?;
            *at += 1;
            let low = u64::from(b & 0x7f);
            if shift >= 64 || (shift > 0 && low.checked_shl(shift)? >> shift != low) {
                return None;
            }
            value |= low << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
    }
    if patch.get(..9)? != b"OTADELTA\x01" {
        return None;
    }
    let mut at = 9;
    let mut out = Vec::new();
    loop {
        let op = *patch.get(at)?;
        at += 1;
        match op {
            0xff => return (at == patch.len()).then_some(out),
            0x01 => {
                let offset = leb(patch, &mut at)?;
                let len = leb(patch, &mut at)?;
                let end = offset.checked_add(len)?;
                if len > 4096 || end > old.len() as u64 {
                    return None;
                }
                out.extend_from_slice(&old[offset as usize..end as usize]);
            }
            0x02 => {
                let len = leb(patch, &mut at)?;
                if len > 2048 {
                    return None;
                }
                let end = at.checked_add(len as usize)?;
                out.extend_from_slice(patch.get(at..end)?);
                at = end;
            }
            _ => return None,
        }
    }
}

fn expected(bytes: &[u8]) -> Expected {
    Expected {
        size: bytes.len() as u64,
        sha256: sha2::Sha256::digest(bytes).into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, a, b, rest @ ..] = data else {
        return;
    };
    let split = (usize::from(*a) << 8 | usize::from(*b)).min(rest.len());
    let (old, other) = rest.split_at(split);
    if mode & 1 == 0 {
        // A hostile patch: ota applies exactly what the reference makes, or refuses.
        let made = reference(old, other);
        let target = made.clone().unwrap_or_default();
        let mut out = Vec::new();
        let result = delta::apply(&mut Cursor::new(old), other, &mut out, &expected(&target));
        match made {
            Some(made) => {
                assert_eq!(result.ok(), Some(made.len() as u64));
                assert_eq!(out, made);
            }
            None => assert!(result.is_err(), "a malformed patch applied"),
        }
        // Another expected file: always refused.
        let mut out = Vec::new();
        let other_target = [target.as_slice(), b"x"].concat();
        let wrong = delta::apply(&mut Cursor::new(old), other, &mut out, &expected(&other_target));
        assert!(wrong.is_err());
    } else {
        // The generator: its patch rebuilds the new file, within the format's limits.
        let new = other;
        let mut patch = Vec::new();
        delta::write_original(&mut Cursor::new(old), &mut Cursor::new(new), &mut patch)
            .expect("in memory");
        let mut reader = OriginalReader::new(patch.as_slice()).expect("a valid header");
        while let Some(op) = reader.next_op().expect("valid ops") {
            match op {
                Op::Copy { len, .. } => assert!((1..=MAX_COPY).contains(&len)),
                Op::Data(d) => assert!((1..=MAX_DATA as usize).contains(&d.len())),
            }
        }
        let mut out = Vec::new();
        delta::apply(&mut Cursor::new(old), patch.as_slice(), &mut out, &expected(new))
            .expect("its own patch applies");
        assert_eq!(out, new);
        assert_eq!(reference(old, &patch).as_deref(), Some(new));
    }
});

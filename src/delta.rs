//! Binary deltas: a new file described as copies from an old file and new bytes.
//!
//! Three separate parts, so that another encoding (e.g. ota's own, zstd-compressed) can
//! reuse the first:
//!
//! - [`diff`] generates the ops ([`Op`]): rsync-style block matching of the new file
//!   against the old one. Memory is bounded whatever the sizes: a table of the old file's
//!   block hashes (at most [`MAX_BLOCKS`] entries, 16 bytes each), a window of the new file,
//!   and one block of the old file read through `Read + Seek` to confirm a match. Neither
//!   file is ever whole in memory.
//! - [`OriginalWriter`] encodes ops in the original updater's `OTADELTA` format, and
//!   [`OriginalReader`] decodes it, refusing anything malformed.
//! - [`apply`] streams a patch onto an old file: the old file is read by seeks, the new one
//!   written through a fixed buffer, and its size and SHA-256 checked against what was
//!   expected.
//!
//! # The `OTADELTA` format (the original updater's, version 1)
//! The magic `OTADELTA` (8 bytes), the version byte `1`, then ops until the byte `0xFF`:
//!
//! - `0x01` copy from the old file: LEB128 offset, LEB128 length (at most 4,096);
//! - `0x02` new data: LEB128 length (at most 2,048), then that many bytes.
//!
//! The original's own generator writes copies longer than 4,096 bytes, which its applier
//! then refuses; [`OriginalWriter`] splits them.
//!
//! New data is stored as it is. A compressed variant needs no change here: write the patch
//! through a compressing writer (e.g. a zstd encoder) and hand [`apply`] the matching
//! decompressing reader.

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use sha2::Digest;

/// The first bytes of every `OTADELTA` patch.
pub const MAGIC: &[u8; 8] = b"OTADELTA";
/// The only format version.
pub const VERSION: u8 = 1;
/// The longest copy one `OTADELTA` op may carry.
pub const MAX_COPY: u64 = 4096;
/// The most new bytes one `OTADELTA` op may carry.
pub const MAX_DATA: u64 = 2048;
/// The most blocks of the old file [`diff`] indexes (its table is 16 bytes per block: 4 MiB):
/// a larger old file gets larger blocks.
pub const MAX_BLOCKS: u64 = 1 << 18;

const OP_COPY: u8 = 0x01;
const OP_DATA: u8 = 0x02;
const OP_END: u8 = 0xFF;

/// Smallest and usual largest block [`diff`] matches (the block grows past the largest
/// only to keep the table within [`MAX_BLOCKS`]).
const MIN_BLOCK: u64 = 64;
const MAX_BLOCK: u64 = 4096;
/// New bytes are handed to the sink in slices of at most this much.
const LITERAL_CHUNK: usize = 64 * 1024;

/// One step of rebuilding the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `len` bytes of the old file from `offset`.
    Copy {
        /// Where in the old file.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// Bytes the old file does not have.
    Data(&'a [u8]),
}

/// What [`diff`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Bytes of the new file copied from the old one.
    pub copied: u64,
    /// Bytes of the new file sent as data.
    pub literal: u64,
    /// The block size matched.
    pub block: u64,
}

/// The block size for an old file of `len` bytes: about its square root (rsync's rule: a
/// small block finds more matches, a large one keeps the table small), within
/// [`MIN_BLOCK`]..=[`MAX_BLOCK`], and larger when the table would exceed [`MAX_BLOCKS`].
fn block_size(len: u64) -> u64 {
    let root = len.isqrt().next_power_of_two();
    root.clamp(MIN_BLOCK, MAX_BLOCK)
        .max(len.div_ceil(MAX_BLOCKS))
}

/// A random value per byte value, so that every bit of the rolling hash depends on every
/// byte (a plain polynomial of the bytes leaves its low bits weak). Fixed: a patch never
/// depends on it, only how fast matches are found.
const BYTE_HASH: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut i = 0;
    while i < 256 {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};
const PRIME: u64 = 0x0000_0100_0000_01B3;

/// The rolling hash of a window: `sum(BYTE_HASH[b_i] * PRIME^(n-1-i))`, wrapping.
fn hash(window: &[u8]) -> u64 {
    window.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(PRIME).wrapping_add(BYTE_HASH[b as usize])
    })
}

/// Rolls `h` one byte on: `out` leaves the window, `into` enters; `top` is PRIME^(n-1).
fn roll(h: u64, out: u8, into: u8, top: u64) -> u64 {
    h.wrapping_sub(BYTE_HASH[out as usize].wrapping_mul(top))
        .wrapping_mul(PRIME)
        .wrapping_add(BYTE_HASH[into as usize])
}

/// Merges adjacent copies and hands ops to the sink in order.
struct Emitter<'s, F> {
    sink: &'s mut F,
    pending: Option<(u64, u64)>,
    stats: DiffStats,
}

impl<F: FnMut(Op<'_>) -> io::Result<()>> Emitter<'_, F> {
    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.stats.copied += len;
        match &mut self.pending {
            Some((start, n)) if *start + *n == offset => *n += len,
            _ => {
                self.flush()?;
                self.pending = Some((offset, len));
            }
        }
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.flush()?;
        self.stats.literal += bytes.len() as u64;
        (self.sink)(Op::Data(bytes))
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some((offset, len)) => (self.sink)(Op::Copy { offset, len }),
            None => Ok(()),
        }
    }
}

/// Generates the ops that rebuild `new` from `old`, in order, handing each to `sink`.
///
/// Copies are as long as the matching runs (an encoder splits them to its limits); data
/// slices are at most 64 KiB. `old` is read once whole to index it, then one block per
/// candidate match; `new` is read once, in order. Errors are the readers' or the sink's.
pub fn diff<O, N, F>(old: &mut O, new: &mut N, sink: &mut F) -> io::Result<DiffStats>
where
    O: Read + Seek + ?Sized,
    N: Read + ?Sized,
    F: FnMut(Op<'_>) -> io::Result<()>,
{
    let old_len = old.seek(SeekFrom::End(0))?;
    let block = block_size(old_len);
    let b = usize::try_from(block).map_err(io::Error::other)?;

    // The table: (hash, block index) of every whole block of the old file, sorted.
    let mut table: Vec<(u64, u32)> =
        Vec::with_capacity(usize::try_from(old_len / block).unwrap_or(0));
    old.seek(SeekFrom::Start(0))?;
    {
        let mut reader = BufReader::with_capacity(64 * 1024, &mut *old);
        let mut buf = vec![0u8; b];
        for index in 0..old_len / block {
            reader.read_exact(&mut buf)?;
            // MAX_BLOCKS keeps the index within u32.
            let index = u32::try_from(index).map_err(io::Error::other)?;
            table.push((hash(&buf), index));
        }
    }
    table.sort_unstable();

    let top = (1..block).fold(1u64, |p, _| p.wrapping_mul(PRIME));
    let mut emitter = Emitter {
        sink,
        pending: None,
        stats: DiffStats {
            block,
            ..DiffStats::default()
        },
    };
    let mut candidate = vec![0u8; b];
    let mut buf: Vec<u8> = Vec::with_capacity(LITERAL_CHUNK + 2 * b);
    let (mut start, mut pos) = (0usize, 0usize); // unsent data from `start`; window at `pos`
    let mut h: Option<u64> = None; // hash of buf[pos..pos + b] when known
    let mut next_block: u64 = 0; // the old block after the last match: preferred on ties
    // Where the last copy ended in the old file, while no data followed it.
    let mut follows: Option<u64> = None;
    let mut eof = false;
    loop {
        if buf.len() - pos < b {
            if eof {
                break;
            }
            // Send the data before the window, move the window to the front, read on.
            let literal = &buf[start..pos];
            send(
                &mut emitter,
                old,
                old_len,
                &mut follows,
                literal,
                &mut candidate,
            )?;
            buf.drain(..pos);
            (start, pos) = (0, 0);
            let want = LITERAL_CHUNK + b;
            while buf.len() < want {
                let at = buf.len();
                buf.resize(want, 0);
                let n = loop {
                    match new.read(&mut buf[at..]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => break other,
                    }
                };
                buf.truncate(at + n.as_ref().map_or(0, |n| *n));
                match n? {
                    0 => {
                        eof = true;
                        break;
                    }
                    _ => continue,
                }
            }
            continue;
        }
        let window = &buf[pos..pos + b];
        let hw = *h.get_or_insert_with(|| hash(window));
        let found = match_block(&table, hw, next_block, window, old, block, &mut candidate)?;
        match found {
            Some(index) => {
                // The bytes just before the match often still equal the old file's (an
                // edit broke the block they were in): copy them too.
                let offset = index * block;
                let literal = &buf[start..pos];
                let back = common_suffix(old, offset, literal, &mut candidate)?;
                let literal = &literal[..literal.len() - back];
                send(
                    &mut emitter,
                    old,
                    old_len,
                    &mut follows,
                    literal,
                    &mut candidate,
                )?;
                emitter.copy(offset - back as u64, back as u64 + block)?;
                follows = Some(offset + block);
                next_block = index + 1;
                pos += b;
                start = pos;
                h = None;
            }
            None => {
                h = buf.get(pos + b).map(|&into| roll(hw, buf[pos], into, top));
                pos += 1;
                if pos - start >= LITERAL_CHUNK {
                    let literal = &buf[start..pos];
                    send(
                        &mut emitter,
                        old,
                        old_len,
                        &mut follows,
                        literal,
                        &mut candidate,
                    )?;
                    start = pos;
                }
            }
        }
    }
    let literal = &buf[start..];
    send(
        &mut emitter,
        old,
        old_len,
        &mut follows,
        literal,
        &mut candidate,
    )?;
    emitter.flush()?;
    Ok(emitter.stats)
}

/// Sends `literal` as data, except its first bytes when they equal the old file's right
/// after the last copy (`follows`): those extend that copy. Updates `follows`.
fn send<O, F>(
    emitter: &mut Emitter<'_, F>,
    old: &mut O,
    old_len: u64,
    follows: &mut Option<u64>,
    literal: &[u8],
    scratch: &mut [u8],
) -> io::Result<()>
where
    O: Read + Seek + ?Sized,
    F: FnMut(Op<'_>) -> io::Result<()>,
{
    let mut literal = literal;
    if let Some(end) = *follows {
        let same = common_prefix(old, old_len, end, literal, scratch)?;
        if same > 0 {
            emitter.copy(end, same as u64)?;
            *follows = Some(end + same as u64);
            literal = &literal[same..];
        }
    }
    if !literal.is_empty() {
        emitter.data(literal)?;
        *follows = None;
    }
    Ok(())
}

/// How many first bytes of `new` (at most `scratch.len()`) equal the old file's from `offset`.
fn common_prefix<O: Read + Seek + ?Sized>(
    old: &mut O,
    old_len: u64,
    offset: u64,
    new: &[u8],
    scratch: &mut [u8],
) -> io::Result<usize> {
    let n = new
        .len()
        .min(scratch.len())
        .min(usize::try_from(old_len.saturating_sub(offset)).unwrap_or(usize::MAX));
    if n == 0 {
        return Ok(0);
    }
    old.seek(SeekFrom::Start(offset))?;
    old.read_exact(&mut scratch[..n])?;
    Ok(new[..n]
        .iter()
        .zip(&scratch[..n])
        .take_while(|(a, b)| a == b)
        .count())
}

/// How many last bytes of `new` (at most `scratch.len()`) equal the old file's before `end`.
fn common_suffix<O: Read + Seek + ?Sized>(
    old: &mut O,
    end: u64,
    new: &[u8],
    scratch: &mut [u8],
) -> io::Result<usize> {
    let n = new
        .len()
        .min(scratch.len())
        .min(usize::try_from(end).unwrap_or(usize::MAX));
    if n == 0 {
        return Ok(0);
    }
    old.seek(SeekFrom::Start(end - n as u64))?;
    old.read_exact(&mut scratch[..n])?;
    Ok(new[new.len() - n..]
        .iter()
        .rev()
        .zip(scratch[..n].iter().rev())
        .take_while(|(a, b)| a == b)
        .count())
}

/// The index of an old block equal to `window`, if any: among blocks of the same hash, the
/// one after the last match first (so that runs of equal blocks copy in order), each
/// confirmed by reading it.
fn match_block<O: Read + Seek + ?Sized>(
    table: &[(u64, u32)],
    h: u64,
    preferred: u64,
    window: &[u8],
    old: &mut O,
    block: u64,
    candidate: &mut [u8],
) -> io::Result<Option<u64>> {
    let first = table.partition_point(|&(x, _)| x < h);
    let same = &table[first..table[first..].partition_point(|&(x, _)| x == h) + first];
    if same.is_empty() {
        return Ok(None);
    }
    let preferred = same
        .binary_search_by_key(&preferred, |&(_, i)| u64::from(i))
        .ok();
    // A 64-bit hash rarely collides; a few reads bound the cost when it does.
    let tries = preferred
        .into_iter()
        .chain(0..same.len().min(4))
        .map(|k| u64::from(same[k].1));
    for index in tries {
        old.seek(SeekFrom::Start(index * block))?;
        old.read_exact(candidate)?;
        if candidate == window {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

/// Writes ops in the `OTADELTA` format, splitting copies at [`MAX_COPY`] and data at
/// [`MAX_DATA`]. Give it a buffered writer: it writes each op's fields separately.
pub struct OriginalWriter<W: Write> {
    out: W,
}

impl<W: Write> OriginalWriter<W> {
    /// Starts a patch: writes the magic and the version.
    pub fn new(mut out: W) -> io::Result<OriginalWriter<W>> {
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        Ok(OriginalWriter { out })
    }

    /// Writes one op (as several when it exceeds the format's limits).
    pub fn op(&mut self, op: Op<'_>) -> io::Result<()> {
        match op {
            Op::Copy {
                mut offset,
                mut len,
            } => {
                while len > 0 {
                    let n = len.min(MAX_COPY);
                    self.out.write_all(&[OP_COPY])?;
                    leb128::write::unsigned(&mut self.out, offset)?;
                    leb128::write::unsigned(&mut self.out, n)?;
                    offset += n;
                    len -= n;
                }
            }
            Op::Data(bytes) => {
                for chunk in bytes.chunks(MAX_DATA as usize) {
                    self.out.write_all(&[OP_DATA])?;
                    leb128::write::unsigned(&mut self.out, chunk.len() as u64)?;
                    self.out.write_all(chunk)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the patch (`0xFF`); returns the writer, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[OP_END])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes the `OTADELTA` patch that rebuilds `new` from `old` into `out` (buffer it).
pub fn write_original<O, N, W>(old: &mut O, new: &mut N, out: W) -> io::Result<DiffStats>
where
    O: Read + Seek + ?Sized,
    N: Read + ?Sized,
    W: Write,
{
    let mut writer = OriginalWriter::new(out)?;
    let stats = diff(old, new, &mut |op| writer.op(op))?;
    writer.finish()?;
    Ok(stats)
}

/// Why a patch was refused: the file it should make is then downloaded whole.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// Not an `OTADELTA` patch.
    #[error("not an OTADELTA patch (its first bytes are not the magic OTADELTA)")]
    BadMagic,
    /// A version this reader does not know.
    #[error("OTADELTA version {0} is not supported (only version 1)")]
    BadVersion(u8),
    /// An op code the format does not have.
    #[error("unknown op 0x{code:02x} at byte {at} of the patch")]
    UnknownOp {
        /// The op code.
        code: u8,
        /// Where.
        at: u64,
    },
    /// A copy or data length over the format's limit.
    #[error("an op at byte {at} of the patch is {len} bytes long: the format allows at most {max}")]
    TooLongOp {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
        /// Where.
        at: u64,
    },
    /// A number that does not fit in 64 bits.
    #[error("a number at byte {0} of the patch does not fit in 64 bits")]
    BadNumber(u64),
    /// The patch ends before its end op.
    #[error("the patch is truncated (it ends at byte {0}, before its end op)")]
    Truncated(u64),
    /// Bytes after the end op.
    #[error("the patch has bytes after its end op (at byte {0})")]
    TrailingBytes(u64),
    /// A copy beyond the end of the old file.
    #[error(
        "the patch copies bytes {offset}..{end} of the old file, which has {old_len}: it was \
         made from another version of this file",
        end = u128::from(*offset) + u128::from(*len)
    )]
    CopyBeyondOld {
        /// Where the copy starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The old file's size.
        old_len: u64,
    },
    /// The result is not the expected size.
    #[error("the patch makes {got} bytes where {expected} were expected")]
    WrongSize {
        /// Bytes made (or at least made, when the patch went on).
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The result has not the expected digest.
    #[error(
        "the patched file's SHA-256 is not the expected one: it was made from another version of this file"
    )]
    WrongDigest,
    /// Reading the patch failed.
    #[error("cannot read the patch: {0}")]
    ReadPatch(io::Error),
    /// Reading the old file failed.
    #[error("cannot read the old file: {0}")]
    ReadOld(io::Error),
    /// Writing the new file failed.
    #[error("cannot write the new file: {0}")]
    Write(io::Error),
}

/// Counts the bytes read, for error positions.
struct Counting<R> {
    inner: R,
    at: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads the ops of an `OTADELTA` patch, checking each against the format's limits; the end
/// op must be the patch's last byte. Give it a buffered reader.
pub struct OriginalReader<R: Read> {
    patch: Counting<R>,
    data: Box<[u8; MAX_DATA as usize]>,
    done: bool,
}

impl<R: Read> OriginalReader<R> {
    /// Reads and checks the magic and the version.
    pub fn new(patch: R) -> Result<OriginalReader<R>, DeltaError> {
        let mut reader = OriginalReader {
            patch: Counting {
                inner: patch,
                at: 0,
            },
            data: Box::new([0u8; MAX_DATA as usize]),
            done: false,
        };
        let mut head = [0u8; 9];
        fill(&mut reader.patch, &mut head).map_err(|e| match e {
            DeltaError::Truncated(_) => DeltaError::BadMagic,
            other => other,
        })?;
        if &head[..8] != MAGIC {
            return Err(DeltaError::BadMagic);
        }
        if head[8] != VERSION {
            return Err(DeltaError::BadVersion(head[8]));
        }
        Ok(reader)
    }

    /// The next op, or `None` after the end op.
    pub fn next_op(&mut self) -> Result<Option<Op<'_>>, DeltaError> {
        if self.done {
            return Ok(None);
        }
        let at = self.patch.at;
        let mut code = [0u8];
        fill(&mut self.patch, &mut code)?;
        match code[0] {
            OP_END => {
                self.done = true;
                let mut more = [0u8];
                match self.patch.read(&mut more) {
                    Ok(0) => Ok(None),
                    Ok(_) => Err(DeltaError::TrailingBytes(at + 1)),
                    Err(e) => Err(DeltaError::ReadPatch(e)),
                }
            }
            OP_COPY => {
                let offset = self.number()?;
                let len = self.number()?;
                if len > MAX_COPY {
                    return Err(DeltaError::TooLongOp {
                        len,
                        max: MAX_COPY,
                        at,
                    });
                }
                Ok(Some(Op::Copy { offset, len }))
            }
            OP_DATA => {
                let len = self.number()?;
                if len > MAX_DATA {
                    return Err(DeltaError::TooLongOp {
                        len,
                        max: MAX_DATA,
                        at,
                    });
                }
                // len <= MAX_DATA: checked above.
                let data = &mut self.data[..len as usize];
                fill(&mut self.patch, data)?;
                Ok(Some(Op::Data(data)))
            }
            code => Err(DeltaError::UnknownOp { code, at }),
        }
    }

    fn number(&mut self) -> Result<u64, DeltaError> {
        let at = self.patch.at;
        leb128::read::unsigned(&mut self.patch).map_err(|e| match e {
            leb128::read::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                DeltaError::Truncated(self.patch.at)
            }
            leb128::read::Error::IoError(e) => DeltaError::ReadPatch(e),
            leb128::read::Error::Overflow => DeltaError::BadNumber(at),
        })
    }
}

/// Reads exactly `buf.len()` bytes of the patch.
fn fill<R: Read>(patch: &mut Counting<R>, buf: &mut [u8]) -> Result<(), DeltaError> {
    patch.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DeltaError::Truncated(patch.at),
        _ => DeltaError::ReadPatch(e),
    })
}

/// What the patched file must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

/// Applies the `OTADELTA` `patch` to `old`, writing the new file to `out`; returns its size.
///
/// Memory is fixed (one 4 KiB copy buffer, one 2 KiB data buffer, an 8 KiB read buffer on
/// `patch`): `old` is read with seeks, `out` written as ops come. Everything malformed is an
/// error, never a panic: the result's size and SHA-256 must be `expected`, and writing stops
/// as soon as the patch would make more than `expected.size` bytes. On an error, what was
/// written to `out` is garbage: write to a temporary file and keep it only on `Ok`.
pub fn apply<O, P, W>(
    old: &mut O,
    patch: P,
    out: &mut W,
    expected: &Expected,
) -> Result<u64, DeltaError>
where
    O: Read + Seek + ?Sized,
    P: Read,
    W: Write + ?Sized,
{
    let old_len = old.seek(SeekFrom::End(0)).map_err(DeltaError::ReadOld)?;
    let mut reader = OriginalReader::new(BufReader::with_capacity(8192, patch))?;
    let mut copy = [0u8; MAX_COPY as usize];
    let mut sha256 = sha2::Sha256::new();
    let mut made = 0u64;
    while let Some(op) = reader.next_op()? {
        let bytes: &[u8] = match op {
            Op::Copy { offset, len } => {
                if offset.checked_add(len).is_none_or(|end| end > old_len) {
                    return Err(DeltaError::CopyBeyondOld {
                        offset,
                        len,
                        old_len,
                    });
                }
                // len <= MAX_COPY: checked by the reader.
                let buf = &mut copy[..len as usize];
                old.seek(SeekFrom::Start(offset))
                    .and_then(|_| old.read_exact(buf))
                    .map_err(DeltaError::ReadOld)?;
                buf
            }
            Op::Data(bytes) => bytes,
        };
        made += bytes.len() as u64;
        if made > expected.size {
            return Err(DeltaError::WrongSize {
                got: made,
                expected: expected.size,
            });
        }
        sha256.update(bytes);
        out.write_all(bytes).map_err(DeltaError::Write)?;
    }
    if made != expected.size {
        return Err(DeltaError::WrongSize {
            got: made,
            expected: expected.size,
        });
    }
    if <[u8; 32]>::from(sha256.finalize()) != expected.sha256 {
        return Err(DeltaError::WrongDigest);
    }
    out.flush().map_err(DeltaError::Write)?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Cursor;

    use super::*;

    fn patch(old: &[u8], new: &[u8]) -> (Vec<u8>, DiffStats) {
        let mut out = Vec::new();
        let stats = write_original(&mut Cursor::new(old), &mut Cursor::new(new), &mut out).unwrap();
        (out, stats)
    }

    fn expected(new: &[u8]) -> Expected {
        Expected {
            size: new.len() as u64,
            sha256: sha2::Sha256::digest(new).into(),
        }
    }

    fn applied(old: &[u8], patch: &[u8], expected: &Expected) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::new();
        apply(&mut Cursor::new(old), patch, &mut out, expected)?;
        Ok(out)
    }

    fn round_trip(old: &[u8], new: &[u8]) -> Vec<u8> {
        let (p, _) = patch(old, new);
        assert_eq!(applied(old, &p, &expected(new)).unwrap(), new);
        check_limits(&p);
        p
    }

    /// Every op of `p` within the format's limits.
    fn check_limits(p: &[u8]) {
        let mut reader = OriginalReader::new(p).unwrap();
        while let Some(op) = reader.next_op().unwrap() {
            match op {
                Op::Copy { len, .. } => assert!((1..=MAX_COPY).contains(&len)),
                Op::Data(d) => assert!((1..=MAX_DATA as usize).contains(&d.len())),
            }
        }
    }

    fn random(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.u8(..)).collect()
    }

    #[test]
    fn round_trips_of_empty_equal_and_unrelated_files() {
        round_trip(b"", b"");
        round_trip(b"", b"new file");
        round_trip(b"old file", b"");
        let mut rng = fastrand::Rng::with_seed(1);
        let a = random(&mut rng, 100_000);
        let b = random(&mut rng, 50_000);
        round_trip(&a, &b);
        let same = round_trip(&a, &a);
        // 100,000 equal bytes: copies only (25 ops of at most 4,096), no data.
        assert!(same.len() < 200, "{}", same.len());
    }

    #[test]
    fn random_edits_round_trip_and_cost_about_what_changed() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..40 {
            let len = rng.usize(0..300_000);
            let old = random(&mut rng, len);
            let mut new = old.clone();
            let mut changed = 0;
            for _ in 0..rng.usize(0..6) {
                let at = rng.usize(0..=new.len());
                let n = rng.usize(0..3000);
                match rng.u8(0..3) {
                    0 => {
                        let bytes = random(&mut rng, n);
                        new.splice(at..at, bytes);
                    }
                    1 => {
                        new.drain(at..(at + n).min(new.len()));
                    }
                    _ => {
                        let end = (at + n).min(new.len());
                        let bytes = random(&mut rng, end - at);
                        new.splice(at..end, bytes);
                    }
                }
                changed += n;
            }
            let p = round_trip(&old, &new);
            let block = block_size(old.len() as u64) as usize;
            // Each edit costs at most its bytes and two blocks, plus a few bytes per op.
            let bound = changed + 6 * 2 * block + old.len() / 400 + block + 64;
            assert!(p.len() <= bound, "round {round}: {} > {bound}", p.len());
        }
    }

    #[test]
    fn long_copies_are_split_at_4096_and_data_at_2048() {
        let mut rng = fastrand::Rng::with_seed(3);
        let old = random(&mut rng, 1 << 20);
        let mut new = old.clone();
        new.splice(500_000..500_000, random(&mut rng, 10_000));
        round_trip(&old, &new);
        // The ops themselves are longer: the writer splits them.
        let mut ops = Vec::new();
        diff(&mut Cursor::new(&old), &mut Cursor::new(&new), &mut |op| {
            ops.push(match op {
                Op::Copy { len, .. } => len,
                Op::Data(d) => d.len() as u64,
            });
            Ok(())
        })
        .unwrap();
        assert!(ops.iter().any(|&n| n > MAX_COPY), "{ops:?}");
    }

    #[test]
    fn an_edit_costs_its_own_bytes_not_the_blocks_around_it() {
        let mut rng = fastrand::Rng::with_seed(5);
        let old = random(&mut rng, 1 << 20);
        let mut new = old.clone();
        new.splice(300_001..300_001, random(&mut rng, 1000));
        new[700_003] ^= 0x55;
        let p = round_trip(&old, &new);
        // 1,001 bytes of data, and about 7 bytes per 4 KiB copied (256 copy ops).
        assert!(p.len() < 1001 + 256 * 8 + 64, "{}", p.len());
    }

    #[test]
    fn repeated_content_copies_in_order() {
        let old = vec![0u8; 200_000];
        let mut new = old.clone();
        new[100_000] = 1;
        let p = round_trip(&old, &new);
        assert!(p.len() < 1000, "{}", p.len());
    }

    #[test]
    fn block_size_keeps_the_table_bounded() {
        assert_eq!(block_size(0), MIN_BLOCK);
        assert_eq!(block_size(4 << 20), 2048);
        assert_eq!(block_size(1 << 30), 4096);
        assert!((1u64 << 40) / block_size(1 << 40) <= MAX_BLOCKS);
    }

    /// A patch by hand: header, then `body`.
    fn hand(body: &[u8]) -> Vec<u8> {
        let mut p = b"OTADELTA\x01".to_vec();
        p.extend_from_slice(body);
        p
    }

    fn refused(old: &[u8], patch: &[u8], expected: &Expected) -> DeltaError {
        applied(old, patch, expected).unwrap_err()
    }

    #[test]
    fn hostile_patches_are_refused_with_errors() {
        let old = b"0123456789".to_vec();
        let new = b"0123abc".to_vec();
        let e = expected(&new);
        let good = hand(b"\x01\x00\x04\x02\x03abc\xff");
        assert_eq!(applied(&old, &good, &e).unwrap(), new);

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "magic"),
            (b"OTADELT".to_vec(), "magic"),
            (b"NOTDELTA\x01\xff".to_vec(), "magic"),
            (b"OTADELTA\x02\xff".to_vec(), "version 2"),
            (hand(b""), "truncated"),
            (hand(b"\x01\x00"), "truncated"),
            (hand(b"\x01\x00\x04"), "truncated"),
            (hand(b"\x02\x03ab"), "truncated"),
            (hand(b"\x01\x80"), "truncated"),
            (hand(b"\x03\xff"), "unknown op 0x03"),
            (hand(b"\x01\x00\x04\x02\x03abc\xff\x00"), "after its end op"),
            // A copy past the old file, one overflowing u64, one over 4,096.
            (hand(b"\x01\x08\x04\xff"), "copies bytes 8..12"),
            (
                hand(b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x04\xff"),
                "copies bytes",
            ),
            (hand(b"\x01\x00\x81\x20\xff"), "4097 bytes long"),
            (hand(b"\x02\x81\x10\xff"), "2049 bytes long"),
            (
                hand(b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\xff"),
                "64 bits",
            ),
            // Well formed, but not the expected file.
            (hand(b"\x01\x00\x04\x02\x03abd\xff"), "SHA-256"),
            (hand(b"\x01\x00\x04\x02\x02ab\xff"), "makes 6 bytes where 7"),
            (hand(b"\x01\x00\x0a\xff"), "makes 10 bytes where 7"),
        ];
        for (p, shown) in cases {
            let error = refused(&old, &p, &e).to_string();
            assert!(error.contains(shown), "{p:?}: {error}");
        }
    }

    #[test]
    fn a_patch_that_grows_without_end_stops_at_the_expected_size() {
        // 1,000 copies of 4,096 bytes for an expected 5,000: refused at the second.
        let old = vec![7u8; 4096];
        let mut body = Vec::new();
        for _ in 0..1000 {
            body.extend_from_slice(b"\x01\x00\x80\x20");
        }
        body.push(0xff);
        let mut out = Vec::new();
        let e = Expected {
            size: 5000,
            sha256: [0; 32],
        };
        let error = apply(&mut Cursor::new(&old), &hand(&body)[..], &mut out, &e).unwrap_err();
        assert!(
            matches!(error, DeltaError::WrongSize { got: 8192, .. }),
            "{error}"
        );
        assert!(out.len() <= 4096);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        let old = random(&mut rng, 5000);
        for _ in 0..2000 {
            let mut p = hand(&[]);
            let len = rng.usize(0..64);
            p.extend((0..len).map(|_| *rng.choice(&[0u8, 1, 2, 0x7f, 0x80, 0xff, 0x10]).unwrap()));
            let _ = applied(&old, &p, &expected(b"x"));
        }
    }
}

//! LVM2 physical volumes: the metadata area, and each logical volume's filesystem mapped back
//! onto the PV.
//!
//! Implements the LVM2 on-disk format as lvm2 itself defines it (there is no separate
//! specification): `lib/label/label.c` and `lib/format_text/layout.h` for the label, PV header
//! and metadata area header, `lib/format_text/format-text.c` for the circular metadata buffer,
//! and `lib/format_text/import_vsn1.c` with `lib/config/config.c` for the text format (the same
//! text `vgcfgbackup(8)` writes):
//!
//! - the label: `LABELONE` in one of the first four sectors, type `LVM2 001`, with its CRC
//!   (lvm2's `calc_crc`: CRC-32, initial value 0xf597a6cf, no final inversion);
//! - the PV header right after it: PV UUID, device size, the data area and metadata area lists;
//! - the metadata area header (magic ` LVM2 x[5A%r0N*>`, CRC) and its first `raw_locn`, which
//!   points at the current metadata text in the circular buffer (checked against its CRC);
//! - the text format: `name { key = value ... }` with strings, integers and lists.
//!
//! Used: everything before `pe_start` (label, metadata area, bootloader area), every metadata
//! area, everything past the last physical extent, and for each LV its extents on this PV:
//! through [`crate::analyze`] of the LV when it is a plain visible LV whose segments are all
//! linear on this PV (a [`ReadAt`] stitches its segments), whole otherwise (striped over
//! several PVs, mirror, raid, thin, cache, snapshot COW stores, sub-LVs that another LV
//! references, LVs spanning other PVs). Unallocated extents are free.

use std::collections::BTreeMap;
use std::io;

use crate::{le_u32, le_u64, Analysis, Content, Extents, FsError, ReadAt};

/// Largest metadata text read.
pub const MAX_METADATA: u64 = 1 << 20;
/// Deepest nesting of sections and lists in the text.
pub const MAX_DEPTH: usize = 32;

const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
const INITIAL_CRC: u32 = 0xf597_a6cf;
const RAW_LOCN_IGNORED: u32 = 0x1;

/// The analysis of one logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvAnalysis {
    pub name: String,
    /// Size of the LV in bytes.
    pub size_bytes: u64,
    /// Its analysis (`capture` in the LV's own bytes).
    pub analysis: Analysis,
}

/// The analysis of one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvAnalysis {
    pub vg_name: String,
    /// Every LV with extents on this PV, with its analysis (its `capture` is in the LV's own
    /// bytes; LVs that are captured whole carry the reason in `fallback`).
    pub lvs: Vec<LvAnalysis>,
    /// Bytes of the PV to capture.
    pub capture: Extents,
    /// Bytes of the PV allocated to LVs (whole extents).
    pub allocated: Extents,
}

/// Used bytes of the PV; the used-byte count is what the capture holds.
pub fn used<R: ReadAt + ?Sized>(area: &R) -> Result<(Extents, Option<u64>), FsError> {
    let pv = analyze_pv(area)?;
    let total = pv.capture.total();
    Ok((pv.capture, Some(total)))
}

fn inc(m: impl Into<String>) -> FsError {
    FsError::Inconsistent(format!("LVM2: {}", m.into()))
}

fn read_vec<R: ReadAt + ?Sized>(area: &R, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| inc("offset overflow"))?;
    if end > area.size() || len > MAX_METADATA + 4096 {
        return Err(inc(format!(
            "read of {len} bytes at {offset} beyond the area"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    area.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// lvm2's `calc_crc`.
pub fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    data.iter().fold(initial, |c, &b| {
        (c >> 8) ^ t[((c ^ u32::from(b)) & 0xff) as usize]
    })
}

/// The label and PV header.
#[derive(Debug, Clone)]
struct PvHeader {
    uuid: String,
    /// (offset, size) of each metadata area.
    mdas: Vec<(u64, u64)>,
}

fn read_label<R: ReadAt + ?Sized>(area: &R) -> Result<PvHeader, FsError> {
    let len = area.size().min(2048) / 512 * 512;
    if len == 0 {
        return Err(FsError::BadSuperblock("LVM2: area too small".into()));
    }
    let head = read_vec(area, 0, len)?;
    for sector in 0..4u64 {
        let Some(s) = head.get(sector as usize * 512..sector as usize * 512 + 512) else {
            break;
        };
        if &s[..8] != b"LABELONE" {
            continue;
        }
        if le_u64(s, 8) != sector {
            return Err(inc(format!(
                "label in sector {sector} says sector {}",
                le_u64(s, 8)
            )));
        }
        if calc_crc(INITIAL_CRC, &s[20..]) != le_u32(s, 16) {
            return Err(FsError::Checksum("LVM2 label".into()));
        }
        if &s[24..32] != b"LVM2 001" {
            return Err(FsError::Unsupported(format!(
                "LVM label type {:?}",
                String::from_utf8_lossy(&s[24..32])
            )));
        }
        let off = le_u32(s, 20) as usize;
        if !(32..=512 - 48).contains(&off) {
            return Err(inc(format!("PV header at {off}")));
        }
        let uuid = String::from_utf8_lossy(&s[off..off + 32]).into_owned();
        // Two zero-terminated lists of (offset, size): data areas, then metadata areas.
        let mut at = off + 40;
        let mut lists: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            loop {
                if at + 16 > 512 {
                    return Err(inc("PV header area lists run off the sector"));
                }
                let (o, z) = (le_u64(s, at), le_u64(s, at + 8));
                at += 16;
                if o == 0 {
                    break;
                }
                list.push((o, z));
            }
        }
        let [_, mdas] = lists;
        return Ok(PvHeader { uuid, mdas });
    }
    Err(FsError::BadSuperblock(
        "LVM2: no LABELONE in the first 4 sectors".into(),
    ))
}

/// Reads the current metadata text of the first usable metadata area.
fn read_metadata<R: ReadAt + ?Sized>(area: &R, pvh: &PvHeader) -> Result<String, FsError> {
    let mut last_err = FsError::Unsupported("LVM2 PV without a metadata area".into());
    for &(mda_off, mda_size) in &pvh.mdas {
        match read_mda(area, mda_off, mda_size) {
            Ok(Some(text)) => return Ok(text),
            Ok(None) => {}
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

fn read_mda<R: ReadAt + ?Sized>(
    area: &R,
    mda_off: u64,
    mda_size: u64,
) -> Result<Option<String>, FsError> {
    if mda_size <= MDA_HEADER_SIZE
        || mda_off
            .checked_add(mda_size)
            .is_none_or(|e| e > area.size())
    {
        return Err(inc(format!(
            "metadata area [{mda_off}, +{mda_size}) outside the PV"
        )));
    }
    let h = read_vec(area, mda_off, MDA_HEADER_SIZE)?;
    if &h[4..20] != MDA_MAGIC {
        return Err(inc("bad metadata area magic"));
    }
    if calc_crc(INITIAL_CRC, &h[4..]) != le_u32(&h, 0) {
        return Err(FsError::Checksum("LVM2 metadata area header".into()));
    }
    if le_u32(&h, 20) != 1 || le_u64(&h, 24) != mda_off || le_u64(&h, 32) != mda_size {
        return Err(inc("metadata area header version, start or size"));
    }
    let (off, size, crc, flags) = (
        le_u64(&h, 40),
        le_u64(&h, 48),
        le_u32(&h, 56),
        le_u32(&h, 60),
    );
    if off == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    if size == 0 || size > MAX_METADATA {
        return Err(FsError::Unsupported(format!(
            "LVM2 metadata of {size} bytes"
        )));
    }
    let buf_size = mda_size - MDA_HEADER_SIZE;
    if off < MDA_HEADER_SIZE || off >= mda_size || size > buf_size {
        return Err(inc(format!(
            "metadata at {off}, {size} bytes, in an area of {mda_size}"
        )));
    }
    // The text may wrap from the end of the circular buffer to just after the header.
    let first = size.min(mda_size - off);
    let mut text = read_vec(area, mda_off + off, first)?;
    if first < size {
        text.extend(read_vec(area, mda_off + MDA_HEADER_SIZE, size - first)?);
    }
    if calc_crc(INITIAL_CRC, &text) != crc {
        return Err(FsError::Checksum("LVM2 metadata text".into()));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    String::from_utf8(text)
        .map(Some)
        .map_err(|_| inc("metadata text is not UTF-8"))
}

/// A value of the LVM2 text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<Value>),
    Section(Section),
}

/// The `key = value` and `name { ... }` entries of a section, in order.
pub type Section = Vec<(String, Value)>;

/// Parses the LVM2 metadata text format. Hostile input gives an error, never a panic:
/// nesting is bounded by [`MAX_DEPTH`], and the text by the caller.
pub fn parse_text(text: &str) -> Result<Section, FsError> {
    let mut p = Parser {
        b: text.as_bytes(),
        at: 0,
    };
    let s = p.section(0, true)?;
    Ok(s)
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_.+-/@:%".contains(&c)
}

impl Parser<'_> {
    fn err(&self, m: &str) -> FsError {
        inc(format!("metadata text at byte {}: {m}", self.at))
    }

    fn skip(&mut self) {
        while let Some(&c) = self.b.get(self.at) {
            if c == b'#' {
                while self.b.get(self.at).is_some_and(|&c| c != b'\n') {
                    self.at += 1;
                }
            } else if c.is_ascii_whitespace() || c == 0 {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip();
        self.b.get(self.at).copied()
    }

    fn section(&mut self, depth: usize, top: bool) -> Result<Section, FsError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None if top => return Ok(out),
                None => return Err(self.err("unterminated section")),
                Some(b'}') if !top => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(c) if is_ident(c) => {
                    let start = self.at;
                    while self.b.get(self.at).is_some_and(|&c| is_ident(c)) {
                        self.at += 1;
                    }
                    let key = String::from_utf8_lossy(&self.b[start..self.at]).into_owned();
                    match self.peek() {
                        Some(b'{') => {
                            self.at += 1;
                            let s = self.section(depth + 1, false)?;
                            out.push((key, Value::Section(s)));
                        }
                        Some(b'=') => {
                            self.at += 1;
                            let v = self.value(depth + 1)?;
                            out.push((key, v));
                        }
                        _ => return Err(self.err("expected '=' or '{'")),
                    }
                }
                Some(_) => return Err(self.err("unexpected character")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, FsError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.at) {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"') => {
                            self.at += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let Some(&c) = self.b.get(self.at + 1) else {
                                return Err(self.err("unterminated string"));
                            };
                            s.push(c);
                            self.at += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            self.at += 1;
                        }
                    }
                }
                Ok(Value::Str(String::from_utf8_lossy(&s).into_owned()))
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::List(items));
                        }
                        Some(b',') if !items.is_empty() => self.at += 1,
                        None => return Err(self.err("unterminated list")),
                        _ => items.push(self.value(depth + 1)?),
                    }
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                let start = self.at;
                self.at += 1;
                while self
                    .b
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.at += 1;
                }
                let t =
                    std::str::from_utf8(&self.b[start..self.at]).map_err(|_| self.err("number"))?;
                // Floats occur in a few optional settings; keep their integer part.
                let int = t.split('.').next().unwrap_or("");
                int.parse::<i64>()
                    .map(Value::Int)
                    .map_err(|_| self.err("bad number"))
            }
            _ => Err(self.err("expected a value")),
        }
    }
}

fn get<'a>(s: &'a Section, key: &str) -> Option<&'a Value> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn get_int(s: &Section, key: &str) -> Result<u64, FsError> {
    match get(s, key) {
        Some(Value::Int(v)) if *v >= 0 => Ok(*v as u64),
        _ => Err(inc(format!("missing or bad `{key}`"))),
    }
}

fn get_str<'a>(s: &'a Section, key: &str) -> Option<&'a str> {
    match get(s, key) {
        Some(Value::Str(v)) => Some(v),
        _ => None,
    }
}

fn get_section<'a>(s: &'a Section, key: &str) -> Option<&'a Section> {
    match get(s, key) {
        Some(Value::Section(v)) => Some(v),
        _ => None,
    }
}

fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Str(s) => out.push(s.clone()),
        Value::List(l) => l.iter().for_each(|v| strings_in(v, out)),
        Value::Section(s) => s.iter().for_each(|(_, v)| strings_in(v, out)),
        Value::Int(_) => {}
    }
}

/// A piece of an LV on this PV: LV bytes `[lv_off, +len)` at PV bytes `pv_off`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    lv_off: u64,
    pv_off: u64,
    len: u64,
}

/// An LV stitched from its linear segments on this PV.
struct Stitched<'a, R: ReadAt + ?Sized> {
    pv: &'a R,
    pieces: &'a [Piece],
    size: u64,
}

impl<R: ReadAt + ?Sized> ReadAt for Stitched<'_, R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let p = self
                .pieces
                .iter()
                .find(|p| at >= p.lv_off && at < p.lv_off + p.len)
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "beyond the LV"))?;
            let n = ((p.lv_off + p.len - at) as usize).min(buf.len() - pos);
            self.pv
                .read_at(p.pv_off + (at - p.lv_off), &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

/// Analyzes an LVM2 PV: reads its metadata and maps every LV on it.
pub fn analyze_pv<R: ReadAt + ?Sized>(area: &R) -> Result<PvAnalysis, FsError> {
    let pvh = read_label(area)?;
    let text = read_metadata(area, &pvh)?;
    let top = parse_text(&text)?;
    // The VG is the top-level section with `physical_volumes`.
    let (vg_name, vg) = top
        .iter()
        .find_map(|(k, v)| match v {
            Value::Section(s) if get_section(s, "physical_volumes").is_some() => {
                Some((k.clone(), s))
            }
            _ => None,
        })
        .ok_or_else(|| inc("no volume group in the metadata"))?;
    let extent_sectors = get_int(vg, "extent_size")?;
    if extent_sectors == 0 || extent_sectors > 1 << 32 {
        return Err(inc(format!("extent_size {extent_sectors}")));
    }
    let extent = extent_sectors * 512;
    let pvs = get_section(vg, "physical_volumes").ok_or_else(|| inc("no physical_volumes"))?;
    let (pv_name, pv) = pvs
        .iter()
        .find_map(|(k, v)| match v {
            Value::Section(s)
                if get_str(s, "id").is_some_and(|id| id.replace('-', "") == pvh.uuid) =>
            {
                Some((k.clone(), s))
            }
            _ => None,
        })
        .ok_or_else(|| inc(format!("PV {} is not in VG {vg_name}", pvh.uuid)))?;
    let pe_start = get_int(pv, "pe_start")?
        .checked_mul(512)
        .ok_or_else(|| inc("pe_start overflow"))?;
    let pe_count = get_int(pv, "pe_count")?;
    let pe_end = pe_count
        .checked_mul(extent)
        .and_then(|b| b.checked_add(pe_start))
        .ok_or_else(|| inc("pe_count overflow"))?;
    if pe_end > area.size() {
        return Err(inc(format!(
            "{pe_count} extents from {pe_start} exceed the PV ({} bytes)",
            area.size()
        )));
    }

    let mut capture = Extents::new();
    capture.add(0, pe_start);
    for &(o, s) in &pvh.mdas {
        capture.add(o, s);
    }
    capture.add(pe_end, area.size() - pe_end);

    let empty = Vec::new();
    let lvs_sec = get_section(vg, "logical_volumes").unwrap_or(&empty);
    // Every name another LV's segments mention (sub-LVs of raid, mirror, thin, cache,
    // snapshots): those are never analyzed on their own.
    let mut referenced: BTreeMap<String, String> = BTreeMap::new();
    for (lv_name, lv) in lvs_sec {
        let Value::Section(lv) = lv else { continue };
        for (k, seg) in lv {
            if k.starts_with("segment") {
                let mut names = Vec::new();
                strings_in(seg, &mut names);
                for n in names {
                    if &n != lv_name {
                        referenced.entry(n).or_insert_with(|| lv_name.clone());
                    }
                }
            }
        }
    }

    let mut allocated = Extents::new();
    let mut lvs = Vec::new();
    for (lv_name, lv) in lvs_sec {
        let Value::Section(lv) = lv else {
            return Err(inc(format!("LV {lv_name} is not a section")));
        };
        let mut status = Vec::new();
        if let Some(v) = get(lv, "status") {
            strings_in(v, &mut status);
        }
        let mut pieces = Vec::new(); // linear pieces on this PV
        let mut whole_reason: Option<String> = None;
        let mut here = Extents::new(); // this LV's extents on this PV
        let mut lv_extents = 0u64;
        let mut segs: Vec<&Section> = lv
            .iter()
            .filter(|(k, _)| k.starts_with("segment") && k != "segment_count")
            .filter_map(|(_, v)| match v {
                Value::Section(s) => Some(s),
                _ => None,
            })
            .collect();
        segs.sort_by_key(|s| get_int(s, "start_extent").unwrap_or(u64::MAX));
        for seg in segs {
            let start = get_int(seg, "start_extent")?;
            let count = get_int(seg, "extent_count")?;
            if start != lv_extents || count == 0 || count > pe_end / extent + 1 {
                return Err(inc(format!(
                    "LV {lv_name}: segment at extent {start} of {count}"
                )));
            }
            lv_extents += count;
            let ty = get_str(seg, "type").unwrap_or("");
            // Areas on PVs: `stripes` (striped/linear) and `mirrors` (old mirror, pvmove).
            for key in ["stripes", "mirrors"] {
                let Some(Value::List(items)) = get(seg, key) else {
                    continue;
                };
                let pairs: Vec<(&str, u64)> = items
                    .chunks(2)
                    .map(|c| match c {
                        [Value::Str(n), Value::Int(pe)] if *pe >= 0 => Ok((n.as_str(), *pe as u64)),
                        _ => Err(inc(format!("LV {lv_name}: bad `{key}` list"))),
                    })
                    .collect::<Result<_, _>>()?;
                if pairs.is_empty() {
                    return Err(inc(format!("LV {lv_name}: empty `{key}`")));
                }
                let area_len = if key == "stripes" {
                    if count % pairs.len() as u64 != 0 {
                        return Err(inc(format!(
                            "LV {lv_name}: {count} extents over {} stripes",
                            pairs.len()
                        )));
                    }
                    count / pairs.len() as u64
                } else {
                    count
                };
                for (n, pe) in &pairs {
                    if *n != pv_name {
                        if !pvs.iter().any(|(k, _)| k == n) {
                            // An LV name here (pvmove): the data is reached through it.
                            whole_reason.get_or_insert(format!("segment on LV {n} (pvmove)"));
                        } else {
                            whole_reason.get_or_insert(format!("has extents on {n}, another PV"));
                        }
                        continue;
                    }
                    if pe.checked_add(area_len).is_none_or(|e| e > pe_count) {
                        return Err(inc(format!(
                            "LV {lv_name}: extents {pe}+{area_len} beyond the PV"
                        )));
                    }
                    here.add(pe_start + pe * extent, area_len * extent);
                    if key == "stripes" && pairs.len() == 1 && ty == "striped" {
                        pieces.push(Piece {
                            lv_off: start * extent,
                            pv_off: pe_start + pe * extent,
                            len: count * extent,
                        });
                    }
                }
            }
            if ty != "striped" {
                whole_reason.get_or_insert(format!("segment type {ty:?}"));
            } else if get_int(seg, "stripe_count").ok() != Some(1) {
                whole_reason.get_or_insert("striped over several PVs".into());
            }
        }
        if here.total() == 0 {
            continue; // nothing of this LV on this PV
        }
        if let Some(by) = referenced.get(lv_name) {
            whole_reason.get_or_insert(format!("part of LV {by}"));
        }
        if !status.iter().any(|s| s == "VISIBLE") {
            whole_reason.get_or_insert("hidden LV".into());
        }
        if let Some(s) = status.iter().find(|s| *s == "LOCKED" || *s == "PVMOVE") {
            whole_reason.get_or_insert(format!("status {s}"));
        }
        let overlap = allocated.ranges().iter().any(|&(s, l)| {
            here.ranges()
                .iter()
                .any(|&(hs, hl)| hs < s + l && s < hs + hl)
        });
        if overlap {
            return Err(inc(format!("LV {lv_name} overlaps another LV on the PV")));
        }
        for &(s, l) in here.ranges() {
            allocated.add(s, l);
        }
        let lv_size = lv_extents * extent;
        let analysis = match whole_reason {
            Some(reason) => {
                capture_all(&mut capture, &here);
                Analysis {
                    content: Content::Unknown,
                    capture: Extents::whole(lv_size),
                    fs_used_bytes: None,
                    fallback: Some(format!("LV captured whole: {reason}")),
                }
            }
            None => {
                let lv_area = Stitched {
                    pv: area,
                    pieces: &pieces,
                    size: lv_size,
                };
                // As a trait object, so that an LV holding another PV does not instantiate
                // Stitched<Stitched<...>> without end.
                let a = analyze_nested(&lv_area as &dyn ReadAt);
                for &(s, l) in a.capture.ranges() {
                    for p in &pieces {
                        let (from, to) = (s.max(p.lv_off), (s + l).min(p.lv_off + p.len));
                        if from < to {
                            capture.add(p.pv_off + (from - p.lv_off), to - from);
                        }
                    }
                }
                a
            }
        };
        lvs.push(LvAnalysis {
            name: lv_name.clone(),
            size_bytes: lv_size,
            analysis,
        });
    }
    Ok(PvAnalysis {
        vg_name,
        lvs,
        capture: capture.clamp_to(area.size()),
        allocated,
    })
}

/// PVs nested in LVs analyzed at most this deep (hostile metadata could nest without end).
const MAX_NESTING: u32 = 4;

thread_local! {
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// [`crate::analyze`] of an LV, with a bound on PVs nested in LVs.
fn analyze_nested(lv: &dyn ReadAt) -> Analysis {
    let depth = NESTING.with(|n| n.get());
    if depth >= MAX_NESTING {
        return Analysis {
            content: Content::Unknown,
            capture: Extents::whole(lv.size()),
            fs_used_bytes: None,
            fallback: Some("LVM2 PVs nested too deep".into()),
        };
    }
    NESTING.with(|n| n.set(depth + 1));
    let a = crate::analyze(lv);
    NESTING.with(|n| n.set(depth));
    a
}

fn capture_all(capture: &mut Extents, e: &Extents) {
    for &(s, l) in e.ranges() {
        capture.add(s, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let t = r#"vg { id = "a-b" # comment
            seqno = 3
            status = ["READ", "WRITE"]
            flags = []
            x = -1
            s = "q\"uote"
            sub { a = [ "pv0", 0, "pv1", 12 ] }
        }
        contents = "Text Format Volume Group"
        "#;
        let s = parse_text(t).unwrap();
        let Some(Value::Section(vg)) = get(&s, "vg") else {
            panic!()
        };
        assert_eq!(get_int(vg, "seqno").unwrap(), 3);
        assert_eq!(get(vg, "x"), Some(&Value::Int(-1)));
        assert_eq!(get_str(vg, "s"), Some("q\"uote"));
        assert_eq!(get(vg, "flags"), Some(&Value::List(vec![])));
        for bad in [
            "vg {",
            "a = [1, 2",
            "a = \"x",
            "a = ",
            "{",
            "a = 99999999999999999999",
            "a b",
        ] {
            assert!(parse_text(bad).is_err(), "{bad}");
        }
        let deep = "a = ".to_string() + &"[".repeat(10_000);
        assert!(parse_text(&deep).is_err());
        let deep = "a { ".repeat(10_000);
        assert!(parse_text(&deep).is_err());
    }

    #[test]
    fn crc_matches_lvm2() {
        // The label of a PV written by pvcreate 2.03.16 (sector 1), CRC over bytes 20..512.
        let mut s = vec![0u8; 512];
        s[..8].copy_from_slice(b"LABELONE");
        s[8] = 1;
        s[20] = 0x20;
        s[24..32].copy_from_slice(b"LVM2 001");
        s[32..64].copy_from_slice(b"s31rfdcEFKd3DFGR5iE8dilsaWCK2EmV");
        s[0x40..0x48].copy_from_slice(&0x0600_0000u64.to_le_bytes());
        s[0x48..0x50].copy_from_slice(&0x10_0000u64.to_le_bytes());
        s[0x68..0x70].copy_from_slice(&0x1000u64.to_le_bytes());
        s[0x70..0x78].copy_from_slice(&0xff000u64.to_le_bytes());
        s[0x88] = 2; // pv_header_extension: version 2, flags 1 (in use)
        s[0x8C] = 1;
        assert_eq!(calc_crc(INITIAL_CRC, &s[20..]), 0x581e_1619);
    }
}

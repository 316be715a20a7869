//! The conversion job: what the server asks the appliance (or `--direct` mode) to do, and the
//! report that comes back, plus the tiny "job disk" format that carries both between the server
//! and the appliance VM without any network or shared filesystem.
//!
//! Job disk layout (a raw file the server attaches as a virtio disk with serial `p2v-job`):
//!
//! ```text
//! offset 0         "P2VJOB01"  u64 LE length  JSON ConversionJob   (written by the server)
//! offset 8 MiB     "P2VRES01"  u64 LE length  JSON ConversionReport (written by the appliance)
//! total size       JOB_DISK_SIZE (16 MiB)
//! ```
//!
//! Each region is at most 8 MiB minus its 16-byte header; a longer document is an error, and a
//! region whose magic is missing reads as "nothing there" (the appliance never got to write).

use p2v_protocol::inventory::Inventory;
use serde::{Deserialize, Serialize};

use crate::profile::VmSpec;
use crate::Error;

/// Serial number of the job disk as the appliance sees it (`/sys/block/*/serial`).
pub const JOB_DISK_SERIAL: &str = "p2v-job";
/// Serial prefix of the guest disks in the appliance: `p2v-disk0`, `p2v-disk1`, ...
pub const GUEST_DISK_SERIAL_PREFIX: &str = "p2v-disk";
/// Size of the job disk file.
pub const JOB_DISK_SIZE: u64 = 16 << 20;
/// Offset of the result region.
pub const RESULT_OFFSET: u64 = 8 << 20;
const REGION: u64 = 8 << 20;
const HEADER: usize = 16;
const JOB_MAGIC: &[u8; 8] = b"P2VJOB01";
const RESULT_MAGIC: &[u8; 8] = b"P2VRES01";

/// One disk of the machine, as the converter sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDisk {
    /// The server's disk id (`d-...`).
    pub disk_id: String,
    /// The kernel name the disk had on the physical machine (`sda`, `nvme0n1`, `cciss!c0d0`),
    /// from the inventory: what `/dev/...` references in the guest mean.
    pub original_name: String,
    /// Where the whole disk is visible to the converter: `/dev/vdb` in the appliance (found by
    /// the serial `p2v-diskN`), a loop device in direct mode. Filled by whoever runs the job.
    #[serde(default)]
    pub device: Option<String>,
    /// Position in the VM (0 = first disk, the one the firmware boots).
    pub index: usize,
}

/// Everything the converter needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionJob {
    pub machine_id: String,
    /// The capture inventory (physical hardware), when the machine was captured by the agent.
    pub inventory: Option<Inventory>,
    pub disks: Vec<JobDisk>,
    /// The target virtual machine, already resolved from the profile and the inventory.
    pub vm: VmSpec,
    /// Inspect and plan only: mount read-only, change nothing.
    pub dry_run: bool,
}

/// Timings the converter measured, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// The appliance kernel's uptime when the converter started (appliance start cost), if it
    /// ran in the appliance.
    pub appliance_boot_ms: Option<u64>,
    pub inspect_ms: u64,
    pub apply_ms: u64,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionReport {
    pub machine_id: String,
    pub dry_run: bool,
    /// True when every planned change was applied (or, in a dry run, the plan could be made).
    pub ok: bool,
    /// The guest(s) found, what they are and how they boot.
    pub inspection: crate::inspect::Inspection,
    /// Every change, with the reason, whether applied or not.
    pub plan: crate::plan::Plan,
    /// What was actually done (empty in a dry run).
    pub applied: Vec<crate::apply::AppliedChange>,
    /// Problems that stopped (part of) the conversion, for the operator.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub timings: Timings,
}

fn encode(magic: &[u8; 8], json: &[u8]) -> Result<Vec<u8>, Error> {
    if json.len() as u64 > REGION - HEADER as u64 {
        return Err(Error::JobDisk(format!(
            "document of {} bytes does not fit the {} MiB region",
            json.len(),
            REGION >> 20
        )));
    }
    let mut out = Vec::with_capacity(HEADER + json.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json);
    Ok(out)
}

/// Reads one region: `Ok(None)` when its magic is absent.
fn decode<'a>(magic: &[u8; 8], region: &'a [u8]) -> Result<Option<&'a [u8]>, Error> {
    if region.len() < HEADER || &region[..8] != magic {
        return Ok(None);
    }
    let len = u64::from_le_bytes(region[8..16].try_into().expect("8 bytes"));
    if len > REGION - HEADER as u64 || HEADER as u64 + len > region.len() as u64 {
        return Err(Error::JobDisk(format!(
            "region claims {len} bytes, more than it holds"
        )));
    }
    Ok(Some(&region[HEADER..HEADER + len as usize]))
}

/// Bytes to write at offset 0 of a fresh job disk.
pub fn encode_job(job: &ConversionJob) -> Result<Vec<u8>, Error> {
    encode(JOB_MAGIC, &serde_json::to_vec(job)?)
}

/// The job from the job region (offset 0).
pub fn decode_job(region: &[u8]) -> Result<ConversionJob, Error> {
    let json = decode(JOB_MAGIC, region)?
        .ok_or_else(|| Error::JobDisk("no job on the job disk (magic missing)".into()))?;
    Ok(serde_json::from_slice(json)?)
}

/// Bytes to write at [`RESULT_OFFSET`].
pub fn encode_report(report: &ConversionReport) -> Result<Vec<u8>, Error> {
    encode(RESULT_MAGIC, &serde_json::to_vec(report)?)
}

/// The report from the result region, `None` when the appliance wrote none.
pub fn decode_report(region: &[u8]) -> Result<Option<ConversionReport>, Error> {
    match decode(RESULT_MAGIC, region)? {
        None => Ok(None),
        Some(json) => Ok(Some(serde_json::from_slice(json)?)),
    }
}

/// Reads a whole region of the job disk file (or device) at `offset`.
pub fn read_region(path: &std::path::Path, offset: u64) -> Result<Vec<u8>, Error> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    f.take(REGION)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// Writes `bytes` at `offset` of the job disk and flushes it to the device.
pub fn write_region(path: &std::path::Path, offset: u64, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all_at(bytes, offset)
        .map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Creates the job disk file with the job in it.
pub fn create_job_disk(path: &std::path::Path, job: &ConversionJob) -> Result<(), Error> {
    let bytes = encode_job(job)?;
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.set_len(JOB_DISK_SIZE).map_err(|e| Error::io(path, e))?;
    drop(f);
    write_region(path, 0, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_round_trip_and_reject_lies() {
        let doc = br#"{"a":1}"#;
        let enc = encode(JOB_MAGIC, doc).unwrap();
        assert_eq!(decode(JOB_MAGIC, &enc).unwrap(), Some(&doc[..]));
        assert_eq!(decode(RESULT_MAGIC, &enc).unwrap(), None);
        assert_eq!(decode(JOB_MAGIC, &[0u8; 64]).unwrap(), None);
        let mut lie = enc.clone();
        lie[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode(JOB_MAGIC, &lie).is_err());
        let mut short = enc;
        short.truncate(HEADER + 2);
        assert!(decode(JOB_MAGIC, &short).is_err());
        assert!(encode(JOB_MAGIC, &vec![b' '; REGION as usize]).is_err());
    }
}

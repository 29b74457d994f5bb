//! A small disk that fills up: a tmpfs mounted for one test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs, unmounted when dropped; `None` where mounting is refused.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// Outside CI a machine may refuse the mount, and the caller falls
    /// back or says it skipped. On CI (the `CI` variable set) the runner
    /// is root and must be able to: a refusal fails the test.
    pub fn mount(at: &Path, megabytes: u32) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            mounted || std::env::var_os("CI").is_none(),
            "cannot mount a tmpfs at {}: CI must run these tests as root",
            at.display()
        );
        mounted.then(|| Self {
            path: at.to_owned(),
        })
    }

    pub fn free(&self) -> u64 {
        tidings::health::disk::free_bytes(&self.path).unwrap()
    }

    /// Leaves about `left` bytes free, or none at all for 0.
    pub fn fill_leaving(&self, left: u64) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        while self.free() > left {
            let room = usize::try_from(self.free() - left).unwrap_or(usize::MAX);
            if filler.write_all(&chunk[..room.min(chunk.len())]).is_err() {
                break; // full to the last byte
            }
        }
        let _ = filler.sync_all();
    }

    pub fn make_room(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

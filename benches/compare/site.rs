//! The site both servers serve: a temp dir with the docroot (the 512-byte page,
//! the 1 GiB file) and, beside it, the servers' configs and logs.

use super::*;

/// A temp dir holding the docroot, nginx's config and logs; removed on drop.
pub(super) struct Site {
    dir: TempDir,
    pub(super) docroot: PathBuf,
}

impl Site {
    pub(super) fn create() -> BoxResult<Site> {
        let dir = tempfile::Builder::new().prefix("mpiweb-bench-").tempdir()?;
        let docroot = dir.path().join("www");
        fs::create_dir(&docroot)?;
        // nginx started as root serves from workers running as nobody: they must
        // be able to walk into the temp dir (created 0700) and read the files.
        for d in [dir.path(), docroot.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(docroot.join("small.html"), small_html())?;
        eprintln!(
            "bench: writing the 1 GiB test file under {}",
            dir.path().display()
        );
        write_big_file(&docroot.join("big.bin"))?;
        Ok(Site { dir, docroot })
    }

    pub(super) fn tmp(&self) -> &Path {
        self.dir.path()
    }
}

/// Exactly SMALL_SIZE bytes of HTML.
pub(super) fn small_html() -> Vec<u8> {
    let head = "<!DOCTYPE html>\n<html><head><title>mpiweb bench</title></head><body>\n<p>";
    let tail = "</p>\n</body></html>\n";
    let filler = "The quick brown fox jumps over the lazy dog. ";
    let mut page = String::from(head);
    let fill_len = SMALL_SIZE - head.len() - tail.len();
    page.extend(filler.chars().cycle().take(fill_len));
    page.push_str(tail);
    debug_assert_eq!(page.len(), SMALL_SIZE);
    page.into_bytes()
}

/// Writes BIG_SIZE bytes of non-zero data (no holes: a sparse file would be served from zero pages).
fn write_big_file(path: &Path) -> BoxResult<()> {
    let mut file = File::create(path)?;
    // Bytes 1..=251: never zero, and the pattern does not line up with pages.
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..BIG_SIZE / CHUNK as u64 {
        file.write_all(&chunk)?;
    }
    // Flush to disk now so writeback does not run during the first measurements.
    file.sync_all()?;
    Ok(())
}

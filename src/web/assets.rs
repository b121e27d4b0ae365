//! The table of embedded files `build.rs` generates from `web/`.

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    /// A strong ETag, quoted: the content's hash, computed once at build time.
    pub etag: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    /// The file at `path` under `web/` (no leading slash), if embedded.
    pub fn find(path: &str) -> Option<Asset> {
        ASSETS
            .iter()
            .find(|(p, ..)| *p == path)
            .map(|&(_, content_type, etag, bytes)| Asset {
                content_type,
                etag,
                bytes,
            })
    }

    /// Every embedded path.
    pub fn paths() -> impl Iterator<Item = &'static str> {
        ASSETS.iter().map(|(p, ..)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::Asset;
    use std::path::{Path, PathBuf};

    #[test]
    fn every_page_the_routes_serve_is_embedded() {
        for &(route, file) in crate::web::PAGES {
            assert!(
                Asset::find(file).is_some(),
                "{route} serves {file}, which is not embedded"
            );
        }
    }

    /// Catches a build script that embedded another checkout's `web/` (or none): the table
    /// must be this checkout's files, byte for byte.
    #[test]
    fn the_embedded_table_is_this_checkouts_web_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk = Vec::new();
        collect(&root, &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<&str> = Asset::paths().collect();
        embedded.sort_unstable();
        let on_disk_names: Vec<&str> = on_disk.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(embedded, on_disk_names);
        for (name, path) in &on_disk {
            let bytes = std::fs::read(path).expect("a file just listed is readable");
            let asset = Asset::find(name).expect("listed as embedded just above");
            assert!(
                asset.bytes == bytes.as_slice(),
                "{name} differs from web/{name}"
            );
        }
    }

    fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).expect("web/ is readable").flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                collect(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .expect("walked from root")
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push((name, path));
            }
        }
    }
}

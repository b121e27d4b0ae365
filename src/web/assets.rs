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

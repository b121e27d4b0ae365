//! Build script: rebuilds on migration changes, and embeds every file under `web/` as a table
//! of (path, content type, ETag, bytes) in `$OUT_DIR/web_assets.rs`, so a new page or asset
//! needs no Rust edit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    // `sqlx::migrate!` embeds the migrations at compile time.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=web");
    // Read at run time, not with `env!`: `env!` is fixed when this script is compiled, and a
    // target directory shared by two checkouts reuses the compiled script, which would then
    // embed the other checkout's pages (or none).
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir).join("web");
    let mut files = Vec::new();
    if root.is_dir() {
        walk(&root, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// Every file under `web/`: (path under `web/`, content type, strong ETag, bytes).\n",
    );
    out.push_str("pub static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n");
    for file in &files {
        // Directories are watched by mtime of the directory only; name every file too.
        println!("cargo:rerun-if-changed={}", file.display());
        let rel = file
            .strip_prefix(&root)
            .expect("walk only yields paths under web/")
            .to_string_lossy()
            .replace('\\', "/");
        let bytes = std::fs::read(file).expect("a file just listed is readable");
        let etag = format!("\\\"{:016x}-{:x}\\\"", fnv1a(&bytes), bytes.len());
        writeln!(
            out,
            "    ({rel:?}, {:?}, \"{etag}\", include_bytes!({:?})),",
            content_type(&rel),
            file.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(dest.join("web_assets.rs"), out).expect("OUT_DIR is writable");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("web/ is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        // Editor swap files and dotfiles are not assets.
        if name.as_deref().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

/// Content type by extension; JS as `text/javascript` (RFC 9239).
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: a content hash for the ETag without a crate (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

//! Fuzz URL-to-path mapping: whatever comes in, a mapped path stays under
//! the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpiweb::static_files::path::map_url_path;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mapped) = map_url_path(url) {
        assert!(
            mapped.rel.components().all(|c| matches!(c, Component::Normal(_))),
            "{url:?} mapped to {:?}",
            mapped.rel
        );
        let root = Path::new("root");
        let joined = root.join(&mapped.rel);
        assert!(joined.starts_with(root));
        assert!(!mapped.rel.to_string_lossy().contains('\0'));
    }
});

//! Any bytes as the list files of torchvision's downloads (Food-101's JSON, DTD's, Pets' and
//! FGVC-Aircraft's text lists, GTSRB's CSV): samples that stay inside the download, labelled
//! inside the class list, or an error naming a file; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::listed::{samples, Kind};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "pyramidclip-fuzz-listed-{}-{which}",
        std::process::id()
    ));
    // Aircraft takes two files: the variants, then the list, split at the first NUL.
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (kind, files): (Kind, Vec<(&str, &[u8])>) = match which % 5 {
        0 => (Kind::Food101, vec![("meta/test.json", rest)]),
        1 => (Kind::Dtd, vec![("labels/test1.txt", rest)]),
        2 => (Kind::Pets, vec![("annotations/test.txt", rest)]),
        3 => (Kind::Gtsrb, vec![("GT-final_test.csv", rest)]),
        _ => (
            Kind::Aircraft,
            vec![("variants.txt", first), ("images_variant_test.txt", second)],
        ),
    };
    for (name, bytes) in &files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::create_dir_all(dir.join("images")).unwrap();
    match samples(kind, &dir, "test") {
        Ok((s, classes)) => {
            for s in s {
                assert!(s.label < classes.len());
                let images = match kind {
                    Kind::Gtsrb => dir.join("GTSRB/Final_Test/Images"),
                    _ => dir.join("images"),
                };
                assert!(s.path.starts_with(images), "{}", s.path.display());
                assert!(!s.path.components().any(|c| c == std::path::Component::ParentDir));
            }
        }
        Err(e) => assert!(files.iter().any(|(n, _)| e.to_string().contains(n)), "{e}"),
    }
});

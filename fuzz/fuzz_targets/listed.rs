//! Any bytes as the list files of torchvision's downloads (Food-101's JSON, DTD's, Pets' and
//! FGVC-Aircraft's text lists, GTSRB's CSV, VOC2007's XML annotations, MNIST's IDX and STL-10's
//! binary arrays): samples that stay inside the download (array images inside their file, VOC
//! boxes non-empty), labelled inside the class list, or an error naming a file; never a panic.
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
    // Aircraft takes two text files: split at the first NUL.
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    // MNIST and STL-10 take two binary files: the first's length in two bytes, big-endian.
    let (arr, labels) = match rest {
        [a, b, tail @ ..] => tail.split_at((u16::from_be_bytes([*a, *b]) as usize).min(tail.len())),
        _ => (rest, &[][..]),
    };
    let (kind, files): (Kind, Vec<(&str, &[u8])>) = match which % 8 {
        0 => (Kind::Food101, vec![("meta/test.json", rest)]),
        1 => (Kind::Dtd, vec![("labels/test1.txt", rest)]),
        2 => (Kind::Pets, vec![("annotations/test.txt", rest)]),
        3 => (Kind::Gtsrb, vec![("GT-final_test.csv", rest)]),
        5 => (
            Kind::Voc2007,
            vec![
                ("ImageSets/Main/aeroplane_test.txt", b"000001 1\n"),
                ("Annotations/000001.xml", rest),
            ],
        ),
        6 => (
            Kind::Mnist,
            vec![
                ("t10k-images-idx3-ubyte", arr),
                ("t10k-labels-idx1-ubyte", labels),
            ],
        ),
        7 => (Kind::Stl10, vec![("test_X.bin", arr), ("test_y.bin", labels)]),
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
                let inside = match kind {
                    Kind::Gtsrb => dir.join("GTSRB/Final_Test/Images"),
                    Kind::Voc2007 => dir.join("JPEGImages"),
                    Kind::Mnist => dir.join("t10k-images-idx3-ubyte"),
                    Kind::Stl10 => dir.join("test_X.bin"),
                    _ => dir.join("images"),
                };
                assert!(s.path.starts_with(inside), "{}", s.path.display());
                assert!(!s.path.components().any(|c| c == std::path::Component::ParentDir));
                if let Some(r) = s.region {
                    assert!(r.invalid().is_none(), "{r:?}");
                }
                // An array image lies inside its file and crops.
                if let Some(m) = &s.member {
                    let size = std::fs::metadata(&*m.tar).unwrap().len();
                    assert!(m.offset + m.len <= size);
                    assert_eq!(s.crop(8).unwrap().len(), 3 * 8 * 8);
                }
            }
        }
        Err(e) => assert!(files.iter().any(|(n, _)| e.to_string().contains(n)), "{e}"),
    }
});

//! Any bytes as the list files of torchvision's downloads (Food-101's JSON, DTD's, Pets' and
//! FGVC-Aircraft's text lists, GTSRB's CSV, VOC2007's XML annotations, MNIST's IDX, STL-10's
//! binary arrays and PCAM's HDF5 files): samples that stay inside the download (array images inside their file, VOC
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
    // MNIST, STL-10 and PCAM take two binary files: the first's length in two bytes, big-endian.
    let (arr, labels) = match rest {
        [a, b, tail @ ..] => tail.split_at((u16::from_be_bytes([*a, *b]) as usize).min(tail.len())),
        _ => (rest, &[][..]),
    };
    let (kind, files): (Kind, Vec<(&str, &[u8])>) = match which % 9 {
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
        7 => (
            Kind::Stl10,
            vec![("test_X.bin", arr), ("test_y.bin", labels)],
        ),
        8 => (
            Kind::Pcam,
            vec![
                ("camelyonpatch_level_2_split_test_x.h5", arr),
                ("camelyonpatch_level_2_split_test_y.h5", labels),
            ],
        ),
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
            for (i, s) in s.into_iter().enumerate() {
                assert!(s.label < classes.len());
                let inside = match kind {
                    Kind::Gtsrb => dir.join("GTSRB/Final_Test/Images"),
                    Kind::Voc2007 => dir.join("JPEGImages"),
                    Kind::Mnist => dir.join("t10k-images-idx3-ubyte"),
                    Kind::Stl10 => dir.join("test_X.bin"),
                    Kind::Pcam => dir.join("camelyonpatch_level_2_split_test_x.h5"),
                    _ => dir.join("images"),
                };
                assert!(s.path.starts_with(inside), "{}", s.path.display());
                assert!(!s
                    .path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir));
                if let Some(r) = s.region {
                    assert!(r.invalid().is_none(), "{r:?}");
                }
                // An array image lies inside its file (or is a row of a chunked HDF5
                // dataset) and crops.
                if let Some(m) = s.member.as_ref().filter(|_| i < 16) {
                    let size = std::fs::metadata(&*m.tar).unwrap().len();
                    assert!(m.rows.is_some() || m.offset + m.len <= size);
                    // A chunk's data is only read (and found corrupt) with its image.
                    match s.crop(8, Default::default()) {
                        Ok(c) => assert_eq!(c.len(), 3 * 8 * 8),
                        Err(e) => assert!(m.rows.is_some(), "{e}"),
                    }
                }
            }
        }
        Err(e) => assert!(files.iter().any(|(n, _)| e.to_string().contains(n)), "{e}"),
    }
});

//! Any bytes as a webdataset shard, indexed for classification (a `cls` or a multi-hot `npy`)
//! and for captions (a caption per line, or the whole `txt`): samples or an error naming the shard, never a panic; every accepted
//! sample's byte range lies inside the file and reads back; multi-hot labels stay in range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pyramidclip::data::wds::{index, Txt, Wants};

fuzz_target!(|data: &[u8]| {
    let path =
        std::env::temp_dir().join(format!("pyramidclip-fuzz-wds-{}.tar", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let shards = [path.clone()];
    for wants in [
        Wants {
            classes: Some(3),
            txt: Txt::Unused,
            multilabel: false,
        },
        Wants {
            classes: None,
            txt: Txt::Lines,
            multilabel: false,
        },
        Wants {
            classes: None,
            txt: Txt::Whole,
            multilabel: false,
        },
        Wants {
            classes: Some(4),
            txt: Txt::Unused,
            multilabel: true,
        },
    ] {
        for skip in [false, true] {
            match index(&shards, wants, skip) {
                Ok(ix) => {
                    assert_eq!(ix.samples.len(), ix.shard_of.len());
                    match wants.txt {
                        Txt::Unused => assert!(ix.captions.is_empty()),
                        Txt::Lines => assert!(ix.captions.iter().all(|c| !c.is_empty())),
                        Txt::Whole => assert!(ix.captions.iter().all(|c| c.len() == 1)),
                    }
                    if wants.txt != Txt::Unused {
                        assert_eq!(ix.captions.len(), ix.samples.len());
                    }
                    if wants.multilabel {
                        assert_eq!(ix.positives.len(), ix.samples.len());
                        for (p, s) in ix.positives.iter().zip(&ix.samples) {
                            assert!(p.iter().all(|&c| c < 4) && p.windows(2).all(|w| w[0] < w[1]));
                            assert_eq!(s.label, p.first().map_or(0, |&c| c as usize));
                        }
                    }
                    for s in &ix.samples {
                        let m = s.member.as_ref().unwrap();
                        assert!(m.offset + m.len <= data.len() as u64);
                        assert_eq!(m.read().unwrap().len() as u64, m.len);
                        if let Some(c) = wants.classes {
                            assert!(s.label < c);
                        }
                    }
                }
                Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            }
        }
    }
});

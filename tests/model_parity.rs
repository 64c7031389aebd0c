//! The tiny reference checkpoints load strictly and reproduce the reference's features.

mod common;
use candle_core::{DType, Device};
use common::*;
use pyramidclip::checkpoint::{self, Checkpoint};

fn load(file: &str, arch: Option<&str>) -> pyramidclip::LoadedModel {
    pyramidclip::load_model(
        &fixtures().join(file),
        &registry(),
        arch,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn check_model(file: &str, prefix: &str, arch: &str) {
    let m = load(file, None);
    assert_eq!(m.name, arch);
    let exp = expected();
    let img = m.model.encode_image(&expected_pixels(64)).unwrap();
    assert_rows_close(
        &img,
        &exp[&format!("{prefix}.image_features_raw")],
        &format!("{prefix} image"),
    );
    let txt = m.model.encode_text(&exp["tokens"]).unwrap();
    assert_rows_close(
        &txt,
        &exp[&format!("{prefix}.text_features_raw")],
        &format!("{prefix} text"),
    );
    let img_n = m
        .model
        .encode_image_normalized(&expected_pixels(64))
        .unwrap();
    assert_rows_close(
        &img_n,
        &exp[&format!("{prefix}.image_features")],
        &format!("{prefix} image normalised"),
    );
}

#[test]
fn tiny_rn_matches_reference() {
    check_model("tiny-RN.pth.tar", "tiny_RN", "tiny-RN");
}

#[test]
fn tiny_vit_matches_reference() {
    check_model("tiny-ViT.pth.tar", "tiny_ViT", "tiny-ViT");
}

#[test]
fn legacy_stream_loads_identical_weights() {
    let zip = Checkpoint::open(&fixtures().join("tiny-ViT.pth.tar")).unwrap();
    let legacy = Checkpoint::open(&fixtures().join("tiny-ViT.legacy.pth.tar")).unwrap();
    assert_eq!(legacy.format, checkpoint::Format::Legacy);
    assert_eq!(
        zip.keys().collect::<Vec<_>>(),
        legacy.keys().collect::<Vec<_>>()
    );
    for k in zip.keys() {
        assert_eq!(zip.read_f32(k).unwrap(), legacy.read_f32(k).unwrap(), "{k}");
    }
    assert_eq!(zip.epoch, legacy.epoch);
}

#[test]
fn wrong_architecture_is_named() {
    let reg = registry();
    let err = pyramidclip::load_model(
        &fixtures().join("tiny-ViT.pth.tar"),
        &reg,
        Some("tiny-RN"),
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("holds a ViT (patch 16, width 64, 10 layers"),
        "{err}"
    );
    assert!(
        err.contains("tiny-ViT") && err.contains("--visual-model tiny-RN"),
        "{err}"
    );
}

/// A metadata-free safetensors file with the given shapes; the data region is a sparse hole.
fn sparse_safetensors(path: &std::path::Path, tensors: &[(String, Vec<usize>)], prefix: &str) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (k, shape) in tensors {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        header.insert(
            format!("{prefix}{k}"),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let h = serde_json::to_vec(&header).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    use std::io::Write;
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    f.set_len(8 + h.len() as u64 + offset).unwrap();
}

#[test]
fn full_size_architectures_are_detected_from_shapes() {
    let reg = pyramidclip::Registry::builtin();
    let dir = tempfile::tempdir().unwrap();
    for arch in ["RN50", "ViT-B-32", "ViT-B-16"] {
        let shapes = checkpoint::state_dict_shapes(reg.get(arch).unwrap()).unwrap();
        let path = dir.path().join(format!("{arch}.safetensors"));
        sparse_safetensors(&path, &shapes, "module.");
        let ck = Checkpoint::open(&path).unwrap();
        let found = checkpoint::detect_config(&ck, &reg, None).unwrap();
        assert_eq!(found.name.as_deref(), Some(arch));
        let params: usize = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(ck.param_count(), params);
    }
}

/// The parity tests again with the narrower matrix-multiply kernels forced (portable Rust and
/// AVX2), by re-running this test binary with `PYRAMIDCLIP_GEMM` set: each CPU path must match
/// the reference, not only the widest one this machine picks.
#[test]
fn parity_holds_on_every_kernel_family() {
    if std::env::var_os("PYRAMIDCLIP_GEMM").is_some() {
        return; // the child run itself
    }
    let exe = std::env::current_exe().unwrap();
    for family in ["generic", "avx2"] {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "tiny_rn_matches_reference",
                "tiny_vit_matches_reference",
                "--test-threads",
                "1",
            ])
            .env("PYRAMIDCLIP_GEMM", family)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{family} kernels: {text}");
        assert!(text.contains("2 passed"), "{family} kernels ran: {text}");
    }
}

/// A CPU batch is split between the threads (one slice per thread, the leftover rows on all
/// threads); every item's features must be exactly those it gets alone, whatever the split.
#[test]
fn batch_split_between_threads_gives_each_item_its_own_features() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for (file, prefix) in [
        ("tiny-RN.pth.tar", "tiny_RN"),
        ("tiny-ViT.pth.tar", "tiny_ViT"),
    ] {
        let m = load(file, None);
        let px = expected_pixels(64);
        let tokens = expected()["tokens"].clone();
        // 9 and 11 items on 2 threads: slices of 4 and 5 plus one leftover item.
        let take = |t: &candle_core::Tensor, n: usize| {
            let reps = n.div_ceil(t.dim(0).unwrap());
            candle_core::Tensor::cat(&vec![t.clone(); reps], 0)
                .unwrap()
                .narrow(0, 0, n)
                .unwrap()
        };
        for n in [9, 11] {
            let (px, tok) = (take(&px, n), take(&tokens, n));
            let (img, txt) = pool.install(|| {
                (
                    m.model.encode_image(&px).unwrap(),
                    m.model.encode_text(&tok).unwrap(),
                )
            });
            for i in 0..n {
                let one_img = pool
                    .install(|| m.model.encode_image(&px.narrow(0, i, 1).unwrap()))
                    .unwrap();
                let one_txt = pool
                    .install(|| m.model.encode_text(&tok.narrow(0, i, 1).unwrap()))
                    .unwrap();
                let row =
                    |t: &candle_core::Tensor, r: usize| t.get(r).unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(row(&img, i), row(&one_img, 0), "{prefix} image {i} of {n}");
                assert_eq!(row(&txt, i), row(&one_txt, 0), "{prefix} text {i} of {n}");
            }
        }
    }
}

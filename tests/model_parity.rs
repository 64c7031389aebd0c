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

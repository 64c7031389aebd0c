//! Checkpoint formats and architecture detection: the same weights through every format, the
//! wrong architecture named, full-size architectures recognised from their shapes.

use crate::util::*;
use pyramidclip::checkpoint::{self, Checkpoint};

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

/// A legacy stream with an optimizer's state next to the weights: its storages come first
/// or between the weights' and are stepped over (`scripts/make_legacy_optimizer_fixture.py`).
#[test]
fn legacy_stream_with_optimizer_state_loads() {
    fixture_linear("legacy-with-optimizer.pth", checkpoint::Format::Legacy, 1);
}

/// The small Linear of `scripts/make_legacy_optimizer_fixture.py`, read exactly.
fn fixture_linear(file: &str, format: checkpoint::Format, epoch: i64) {
    let ck = Checkpoint::open(&fixtures().join(file)).unwrap();
    assert_eq!(ck.format, format);
    assert_eq!(ck.epoch, Some(epoch));
    assert_eq!(ck.keys().collect::<Vec<_>>(), ["bias", "weight"]);
    let weight: Vec<f32> = (0..6).map(|i| i as f32 / 8.0).collect();
    assert_eq!(ck.read_f32("weight").unwrap(), weight);
    assert_eq!(ck.read_f32("bias").unwrap(), [-1.0, 2.0]);
}

/// What training scripts store next to the weights (an argparse Namespace, numpy values, a
/// path) is kept as inert names and skipped; the same inside the state dict is refused, naming
/// the entry and the class (`scripts/make_legacy_optimizer_fixture.py`).
#[test]
fn script_objects_next_to_the_weights_are_skipped() {
    fixture_linear("zip-with-script-objects.pth", checkpoint::Format::Zip, 7);
    let err = Checkpoint::open(&fixtures().join("zip-foreign-in-state-dict.pth"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("zip-foreign-in-state-dict.pth")
            && err.contains("`extra` is a pickled `argparse.Namespace`"),
        "{err}"
    );
}

#[test]
fn wrong_architecture_is_named() {
    let mut opts = load_options("tiny-ViT.pth.tar", pyramidclip::EngineChoice::Auto);
    opts.visual_model = Some("tiny-RN".into());
    let err = pyramidclip::load(&opts).err().unwrap().to_string();
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
    // EVA02-B-16: a timm EVA trunk (rotary, SwiGLU) found by its shapes too.
    for arch in ["RN50", "ViT-B-32", "ViT-B-16", "EVA02-B-16"] {
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

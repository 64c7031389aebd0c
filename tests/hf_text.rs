//! open_clip's models with a HuggingFace text tower (scripts/dev/hf_text_reference.py): tiny
//! XLM-RoBERTa / RoBERTa encoders built by transformers from their configs (`tiny-xlmr` as
//! xlm-roberta-base-ViT-B-32: the mean pooler, the MLP projection; `tiny-roberta-cls` with the
//! encoder's own pooler and a linear projection, context 16) and a byte-level BPE tokenizer
//! with RoBERTa's post-processor; a tiny NLLB (M2M100) encoder (`tiny-nllb` as
//! nllb-clip-base: the language code's position pooled, a linear projection; its position table
//! saved) with an NLLB-style tokenizer, and the same tower after SigLIP's image tower
//! (`tiny-nllb-siglip` as nllb-clip-base-siglip; its position table computed). Both engines, against open_clip's `encode_image` / `encode_text`, its
//! `HFTokenizer` rows and its zero-shot top-1.

use crate::clip::{
    clip_dir, features_match, minival_result, reference_with_prompts, s, zero_shot_matches,
};
use crate::util::*;

/// The fixture models and their files' extensions.
const MODELS: [(&str, &str); 4] = [
    ("tiny-xlmr", "safetensors"),
    ("tiny-roberta-cls", "pt"),
    ("tiny-nllb", "pt"),
    ("tiny-nllb-siglip", "safetensors"),
];

/// The fixture tokenizer a model takes.
fn tokenizer_dir(name: &str) -> &'static str {
    if name.starts_with("tiny-nllb") {
        "nllb-tokenizer"
    } else {
        "hf-tokenizer"
    }
}

/// The model arguments for fixture `name` (its file `ext`), named or found by shapes (with
/// the yml, whose entries the shapes match, giving what the weights cannot show).
fn args(name: &str, ext: &str, named: bool) -> Vec<String> {
    let mut a = vec![
        "--checkpoint".to_string(),
        s(&clip_dir().join(format!("{name}.{ext}"))),
        "--model-config".into(),
        s(&clip_dir().join("tiny-hf.yml")),
        "--tokenizer".into(),
        s(&clip_dir().join(tokenizer_dir(name))),
    ];
    if named {
        a.extend(["--visual-model".into(), name.to_string()]);
    }
    a
}

/// Image and text features (case, punctuation, accents, CJK, an empty prompt, one past the
/// context) within open_clip's, both engines, by name and by shapes.
#[test]
fn hf_text_features_match_open_clip() {
    let (want, images, prompts) = reference_with_prompts("hf-text.safetensors");
    let io = (&images[..], &prompts[..]);
    features_match(&want, io, &MODELS, args, |name, log| {
        let family = if name.ends_with("siglip") {
            "family siglip"
        } else {
            "family hf-text"
        };
        assert!(log.contains(family), "{log}");
        assert!(log.contains(tokenizer_dir(name)), "{log}");
    });
}

/// `tokenize --tokenizer` gives open_clip's `HFTokenizer` rows for the RoBERTa-style
/// tokenizer (`<s>` ... `</s>`, `<pad>` 1; open_clip's default `whitespace` cleaning) at both
/// contexts, and for the NLLB-style one (`eng_Latn` ... `</s>`).
#[test]
fn hf_text_tokens_are_open_clips() {
    let (want, _, prompts) = reference_with_prompts("hf-text.safetensors");
    for (name, ctx) in [
        ("tiny-xlmr", 77),
        ("tiny-roberta-cls", 16),
        ("tiny-nllb", 77),
    ] {
        let key = name.replace('-', "_");
        let tok = s(&clip_dir().join(tokenizer_dir(name)));
        let o = bin()
            .args(["tokenize", "--tokenizer", &tok, "--clean", "whitespace"])
            .arg("--context-length")
            .arg(ctx.to_string())
            .args(&prompts)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours: Vec<Vec<i64>> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let theirs = want[&format!("{key}.tokens")].to_vec2::<i64>().unwrap();
        assert_eq!(ours, theirs, "{key} context {ctx}");
    }
}

#[test]
fn hf_text_zero_shot_predicts_as_open_clip() {
    let (want, _, _) = reference_with_prompts("hf-text.safetensors");
    zero_shot_matches(&want, &MODELS, |name, ext| args(name, ext, true));
    // The result names the family and tokenizer.
    let r = minival_result(&args("tiny-xlmr", "safetensors", true));
    assert_eq!(r["family"], "hf-text");
    assert!(r["tokenizer"].as_str().unwrap().ends_with("tokenizer.json"));
}

/// `--visual-model xlm-roberta-base-ViT-B-32 --checkpoint laion5b_s13b_b90k` reads the
/// weights from the tag's hub repo and the tokenizer from the `xlm-roberta-base` repo (the
/// config's `hf_tokenizer_name`) in the hub cache, as open_clip downloads them; without the
/// tokenizer the load fails with exit 4, naming the repo and --tokenizer.
#[test]
fn hf_text_tags_load_weights_and_tokenizer_from_the_hub_cache() {
    let (want, images, prompts) = reference_with_prompts("hf-text.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let snapshot = |repo: &str| hub_snapshot(&hub, repo);
    let weights = snapshot("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k");
    std::fs::copy(
        clip_dir().join("tiny-xlmr.safetensors"),
        weights.join("open_clip_model.safetensors"),
    )
    .unwrap();
    let tok = snapshot("xlm-roberta-base");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(clip_dir().join("hf-tokenizer").join(f), tok.join(f)).unwrap();
    }
    // The tiny tower stands for the named model; its tokenizer is the named one's repo.
    let yml = std::fs::read_to_string(clip_dir().join("tiny-hf.yml"))
        .unwrap()
        .replace("tiny-xlmr:", "xlm-roberta-base-ViT-B-32:")
        .replace("pyramidclip-test/tiny-hf-tokenizer", "xlm-roberta-base");
    let config = dir.path().join("models.yml");
    std::fs::write(&config, yml).unwrap();
    let run = |engine: &str, out: &std::path::Path| {
        bin()
            .args(["embed", "--visual-model", "xlm-roberta-base-ViT-B-32"])
            .args(["--checkpoint", "laion5b_s13b_b90k"])
            .args(["--model-config", &s(&config), "--model-cache-dir", &s(&hub)])
            .args(["--engine", engine, "--raw", "--out", &s(out), "--images"])
            .args(&images)
            .arg("--text")
            .args(&prompts)
            .output()
            .unwrap()
    };
    for engine in ["native", "candle"] {
        let out = dir.path().join("f.safetensors");
        let o = run(engine, &out);
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        assert!(log.contains(&s(&tok.join("tokenizer.json"))), "{log}");
        let ours = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
        for (a, b) in [("image", "image"), ("text", "text")] {
            let theirs = &want[&format!("tiny_xlmr.{b}_features_raw")];
            assert_rows_close(&ours[&format!("{a}_features")], theirs, engine);
        }
    }
    std::fs::remove_dir_all(&tok).unwrap();
    let o = run("native", &dir.path().join("g.safetensors"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("`xlm-roberta-base`") && err.contains("--tokenizer"),
        "{err}"
    );
}

/// The M2M100 position table computed here equals the one transformers built and older
/// checkpoints saved (`embed_positions.weights`, kept in `tiny-nllb.pt`): checkpoints without
/// it get the same positions.
#[test]
fn m2m100_position_table_is_transformers() {
    let ck = pyramidclip::checkpoint::Checkpoint::open(&clip_dir().join("tiny-nllb.pt")).unwrap();
    let key = "text.transformer.embed_positions.weights";
    let saved = ck
        .tensor(key, candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let (rows, dim) = saved.dims2().unwrap();
    let saved: Vec<f32> = saved.flatten_all().unwrap().to_vec1().unwrap();
    let ours = pyramidclip::models::hf_text::sinusoids(rows, dim, 1);
    let worst = saved
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 2e-6, "max difference {worst}");
    assert!(saved[dim..2 * dim].iter().all(|&v| v == 0.0), "the pad row");
}

/// `inspect` names the text tower beside the image tower, and the family.
#[test]
fn inspect_describes_the_hf_text_tower() {
    for (name, ext, want) in [
        ("tiny-xlmr", "safetensors", "an XLM-RoBERTa encoder (2 layers, width 128, 2 heads), the mean pooler, an MLP projection"),
        ("tiny-nllb-siglip", "safetensors", "an NLLB (M2M100) encoder (2 layers, width 128, 2 heads), the first position, a linear projection"),
    ] {
        let o = bin()
            .arg("inspect")
            .arg(clip_dir().join(format!("{name}.{ext}")))
            .args(["--model-config", &s(&clip_dir().join("tiny-hf.yml"))])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.contains(&format!("text tower:   {want}")), "{out}");
    }
}

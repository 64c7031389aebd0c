//! The integration tests: one binary, one module per area, shared helpers in `util`. Most run
//! the `pyramidclip` binary on `tests/fixtures` (the reference's own outputs).

mod captioning;
mod cli;
mod clip;
mod clipa;
mod datasets;
mod downstream;
mod engines;
mod errors;
mod eva;
mod hf_clip;
mod hf_text;
mod mobileclip;
mod model_parity;
mod preprocess_parity;
mod sharding;
mod siglip;
mod timm_vit;
mod tokenizer_parity;
mod util;
mod vitamin;
mod worldwide;

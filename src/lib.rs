//! pyramidclip: zero-shot evaluation of PyramidCLIP checkpoints on CPU or CUDA with Candle.
//!
//! The layout follows the data: `checkpoint` reads weights, `models` holds the encoders,
//! `tokenizer` and `preprocess` turn text and images into tensors, `dataset` lists and streams
//! image folders, `zeroshot` builds class vectors and scores, and `cli` is the command line.

pub mod checkpoint;
pub mod models;
pub mod preprocess;
pub mod tokenizer;
pub mod util;

pub use checkpoint::{load_model, Checkpoint, LoadedModel};
pub use models::{Config, PyramidClip, Registry};

//! The data a run reads: label sets (`labels`: class names and prompt templates, built in or
//! from files), image folders (`image_folder`: torchvision's ImageFolder layout), webdataset
//! shards (`wds`), the linear probe's labelled splits in either layout (`labelled`), the
//! streaming loader that decodes batches on worker threads (`loader`), captioned image sets
//! for retrieval (`captions`), image-caption selection sets (`selection`) and torchvision's downloads of CIFAR (`cifar`) and of the
//! datasets whose splits are list files (`listed`: Food-101, DTD, Pets, Aircraft, Flowers102,
//! Cars, SUN397, Caltech101, ObjectNet, GTSRB, Country211, RenderedSST2; its MATLAB files read
//! by `mat`), and those whose images are raw arrays (`arrays`: MNIST, STL-10, and PCAM through
//! our HDF5 reader, `hdf5`), which `listed` lists too.

pub mod arrays;
pub mod arrow;
pub mod captions;
pub mod cifar;
pub mod hdf5;
pub mod image_folder;
pub mod labelled;
pub mod labels;
pub mod listed;
pub mod loader;
pub mod mat;
pub mod selection;
pub mod tfds;
pub mod tfrecord;
pub mod vtab;
pub mod wds;

pub use image_folder::{list, list_for, resolve_root, ImageFolder};
pub use labels::{fill, lines};
pub use loader::{stream, Batch, DecodeOptions};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {msg}")]
    Path { path: PathBuf, msg: String },
    #[error("{0}")]
    Labels(String),
    #[error(transparent)]
    Image(#[from] crate::preprocess::Error),
}

/// A text file a flag names, as UTF-8 with any BOM dropped; an error names the file (and the
/// line of a byte that is not UTF-8).
pub fn read_text(path: &std::path::Path, flag: &str) -> Result<String, Error> {
    let fail = |msg: String| Error::Path {
        path: path.into(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {flag}: {e}")))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        fail(format!("line {line}: not UTF-8 text"))
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Where a list file's image paths are relative to: `--images-root` when given, else the
/// file's folder (or its `sub` folder when `sub` names one that exists); it must be a folder.
pub fn images_root(
    file: &std::path::Path,
    given: Option<&std::path::Path>,
    sub: Option<&str>,
) -> Result<PathBuf, Error> {
    let root = match given {
        Some(r) => r.to_path_buf(),
        None => {
            let folder = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf);
            match sub.map(|s| folder.join(s)) {
                Some(d) if d.is_dir() => d,
                _ => folder,
            }
        }
    };
    if !root.is_dir() {
        return Err(Error::Path {
            path: root,
            msg: "is not a directory (--images-root)".into(),
        });
    }
    Ok(root)
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// The file, or for a tar member `SHARD.tar/KEY.EXT` (what outputs name).
    pub path: PathBuf,
    pub label: usize,
    /// Where the bytes are inside a webdataset shard or an array file.
    pub member: Option<wds::Member>,
    /// The box of the image this sample is (VOC2007's objects), cut out before preprocessing.
    pub region: Option<crate::preprocess::Region>,
    /// Whose decoding the image gets.
    pub decoder: Decoder,
}

/// Whose decoding an image gets before the (shared) resize and crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decoder {
    /// PIL's `Image.open(...)`, resized in the image's own mode and converted to RGB after
    /// the crop (the reference's loader, open_clip's CSV dataset and transforms).
    #[default]
    Pil,
    /// PIL's `Image.open(...).convert('RGB')` before the transforms: webdataset's image
    /// decoders (`pil`, `pilrgb`), so CLIP_benchmark's and open_clip's webdataset loaders.
    PilRgb,
    /// As Hugging Face `datasets` decodes an Image column: EXIF orientation applied.
    PilExifTransposed,
    /// TensorFlow's `decode_image` (TFDS's): JPEG with the fast integer IDCT; each level then
    /// multiplied by `gain` (VTAB's dSprites masks).
    TensorFlow { gain: u8 },
}

impl Sample {
    /// How the image is decoded, for keys of what was computed from it (feature caches,
    /// progress files): None for PIL's plain open, so keys made before the other decoders
    /// existed stay valid for it.
    pub fn decoding_tag(&self) -> Option<String> {
        (self.decoder != Decoder::Pil).then(|| format!("{:?}", self.decoder))
    }

    pub fn file(path: PathBuf, label: usize) -> Self {
        Self {
            path,
            label,
            member: None,
            region: None,
            decoder: Decoder::Pil,
        }
    }

    /// What outputs call it: the path, and for a box cut from an image the box
    /// (`000001.jpg#left,upper,right,lower`), since one image may give several samples.
    pub fn name(&self) -> String {
        let path = crate::util::path_text(&self.path);
        match self.region {
            None => path,
            Some(r) => format!("{path}#{},{},{},{}", r.left, r.upper, r.right, r.lower),
        }
    }

    /// Reads, decodes and crops the image: `[3, n, n]` 8-bit levels.
    pub fn crop(
        &self,
        n: usize,
        resize: crate::preprocess::Resize,
    ) -> Result<Vec<u8>, crate::preprocess::Error> {
        use crate::preprocess as pre;
        let err = |msg: String| pre::Error {
            path: self.path.clone(),
            msg,
        };
        let bytes = match &self.member {
            None => std::fs::read(&self.path).map_err(|e| err(e.to_string()))?,
            Some(m) => {
                let bytes = m.read().map_err(|e| err(e.to_string()))?;
                if let Some(raw) = m.pixels {
                    return Ok(pre::crop_u8_from_raw(&bytes, raw, n, resize));
                }
                bytes
            }
        };
        match (self.region, self.decoder) {
            (None, Decoder::Pil) => {
                pre::crop_u8_from_bytes(&bytes, n, resize).map_err(|e| err(e.0))
            }
            (None, Decoder::PilRgb) => pre::decode::decode(&bytes)
                .map(|img| pre::crop_u8_from_image(pre::converted_to_rgb(img), n, resize))
                .map_err(|e| err(e.0)),
            (None, Decoder::PilExifTransposed) => pre::decode::decode_exif_transposed(&bytes)
                .map(|img| pre::crop_u8_from_image(img, n, resize))
                .map_err(|e| err(e.0)),
            (None, Decoder::TensorFlow { gain }) => {
                pre::decode::decode_like_tensorflow(&bytes, gain)
                    .map(|img| pre::crop_u8_from_image(img, n, resize))
                    .map_err(|e| err(e.0))
            }
            (Some(r), _) => {
                let img = pre::decode::decode(&bytes).map_err(|e| err(e.0))?;
                pre::crop_u8_from_region(img, r, n, resize).map_err(err)
            }
        }
    }
}

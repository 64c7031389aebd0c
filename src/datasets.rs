//! Class names (in torchvision label order) and prompt templates of the other datasets the
//! reference evaluates. Data from the clip_benchmark package and CLIP's prompt lists; see
//! configs/data/LICENSES.md.

pub const NAMES: &[&str] = &[];

pub fn classnames(_name: &str) -> Option<Vec<String>> {
    None
}

pub fn templates(name: &str) -> Option<Vec<String>> {
    match name {
        "imagenet" => Some(crate::dataset::imagenet_templates()),
        _ => None,
    }
}

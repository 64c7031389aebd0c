//! Class names (in torchvision's label order) and prompt templates of the other datasets the
//! reference evaluates. Class names from CLIP's prompt lists and the clip_benchmark package,
//! templates from clip_benchmark; see configs/data/LICENSES.md.

macro_rules! data {
    ($($name:literal),* $(,)?) => {
        /// (name, class names, the dataset's own templates)
        const DATA: &[(&str, &str, &str)] = &[
            $(($name,
               include_str!(concat!("../configs/data/datasets/", $name, "_classnames.txt")),
               include_str!(concat!("../configs/data/datasets/", $name, "_templates.txt")))),*
        ];
        pub const NAMES: &[&str] = &[$($name),*];
    };
}

data!(
    "cifar10", "cifar100", "caltech", "car", "flowers", "food", "sun", "dtd", "aircraft", "pet",
    "sat"
);

pub fn classnames(name: &str) -> Option<Vec<String>> {
    DATA.iter()
        .find(|d| d.0 == name)
        .map(|d| crate::dataset::lines(d.1))
}

/// The dataset's own templates (`--templates dataset`); the reference uses the 80 ImageNet ones.
pub fn templates(name: &str) -> Option<Vec<String>> {
    if name == "imagenet" {
        return Some(crate::dataset::imagenet_templates());
    }
    DATA.iter()
        .find(|d| d.0 == name)
        .map(|d| crate::dataset::lines(d.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths and anchor classes of the torchvision datasets' label order.
    #[test]
    fn class_lists_follow_torchvision() {
        type Anchors = &'static [(usize, &'static str)];
        let expect: &[(&str, usize, Anchors)] = &[
            (
                "cifar10",
                10,
                &[(0, "airplane"), (1, "automobile"), (9, "truck")],
            ),
            (
                "cifar100",
                100,
                &[(0, "apple"), (1, "aquarium fish"), (99, "worm")],
            ),
            // torchvision's Caltech101 drops BACKGROUND_Google; Faces, Faces_easy come first.
            (
                "caltech",
                101,
                &[
                    (0, "off-center face"),
                    (1, "centered face"),
                    (4, "accordion"),
                    (100, "yin and yang symbol"),
                ],
            ),
            (
                "car",
                196,
                &[
                    (0, "AM General Hummer SUV 2000"),
                    (195, "smart fortwo Convertible 2012"),
                ],
            ),
            (
                "flowers",
                102,
                &[(0, "pink primrose"), (101, "blackberry lily")],
            ),
            ("food", 101, &[(0, "apple pie"), (100, "waffles")]),
            ("sun", 397, &[(0, "abbey"), (396, "youth hostel")]),
            ("dtd", 47, &[(0, "banded"), (46, "zigzagged")]),
            ("aircraft", 100, &[(0, "707-320"), (99, "Yak-42")]),
            ("pet", 37, &[(0, "Abyssinian"), (36, "Yorkshire Terrier")]),
            // torchvision's EuroSAT: AnnualCrop, Forest, HerbaceousVegetation, ..., SeaLake.
            (
                "sat",
                10,
                &[
                    (0, "annual crop land"),
                    (2, "brushland or shrubland"),
                    (9, "lake or sea"),
                ],
            ),
        ];
        for (name, n, anchors) in expect {
            let c = classnames(name).unwrap();
            assert_eq!(c.len(), *n, "{name}");
            for (i, v) in anchors.iter() {
                assert_eq!(c[*i], *v, "{name}[{i}]");
            }
            let mut uniq = c.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), c.len(), "{name} has duplicates");
            let t = templates(name).unwrap();
            assert!(!t.is_empty());
            crate::dataset::check_templates(&t).unwrap();
        }
        assert_eq!(NAMES.len(), 11);
    }
}

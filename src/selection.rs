//! Image-caption selection (Winoground, SugarCREPE), scored as CLIP_benchmark's
//! `image_caption_selection` does: per instance, the dot products of its L2-normalised image
//! and caption features; with k = min(images, captions), the text choice is right when each of
//! the first k images scores its own caption highest, the image choice when each of the first
//! k captions scores its own image highest (the first of equal scores wins, as `argmax`'s), and
//! the instance when both are. Winoground calls these the text, image and group scores.

/// One instance's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Per image (of the first k), the caption it scores highest.
    pub image_choice: Vec<usize>,
    /// Per caption (of the first k), the image it scores highest.
    pub caption_choice: Vec<usize>,
    pub text_correct: bool,
    pub image_correct: bool,
    /// `[images][captions]` similarities.
    pub scores: Vec<Vec<f32>>,
}

impl Outcome {
    pub fn correct(&self) -> bool {
        self.text_correct && self.image_correct
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The first position of the largest value.
fn argmax(v: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x > best.1 || i == 0 {
            best = (i, x);
        }
    }
    best.0
}

/// The outcome of an instance from its images' and captions' features (rows, L2-normalised).
pub fn outcome(images: &[&[f32]], captions: &[&[f32]]) -> Outcome {
    let scores: Vec<Vec<f32>> = images
        .iter()
        .map(|i| captions.iter().map(|c| dot(i, c)).collect())
        .collect();
    let k = images.len().min(captions.len());
    let image_choice: Vec<usize> = (0..k).map(|i| argmax(scores[i].iter().copied())).collect();
    let caption_choice: Vec<usize> = (0..k)
        .map(|c| argmax(scores.iter().map(|row| row[c])))
        .collect();
    Outcome {
        text_correct: image_choice.iter().enumerate().all(|(i, &c)| i == c),
        image_correct: caption_choice.iter().enumerate().all(|(c, &i)| i == c),
        image_choice,
        caption_choice,
        scores,
    }
}

/// CLIP_benchmark's metric names, as fractions: `text_acc` (the text choice right), `image_acc`
/// (the image choice right) and `acc` (both).
pub fn metrics<'a>(
    outcomes: impl IntoIterator<Item = &'a Outcome>,
) -> serde_json::Map<String, serde_json::Value> {
    let outcomes: Vec<&Outcome> = outcomes.into_iter().collect();
    let n = outcomes.len().max(1) as f64;
    let share = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as f64 / n;
    let mut m = serde_json::Map::new();
    m.insert("image_acc".into(), share(&|o| o.image_correct).into());
    m.insert("text_acc".into(), share(&|o| o.text_correct).into());
    m.insert("acc".into(), share(&|o| o.correct()).into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_follow_the_diagonal_and_the_first_of_ties() {
        // Two images, two captions: image 0 likes caption 0, image 1 likes caption 0 too.
        let i0 = [1.0, 0.0];
        let i1 = [0.8, 0.6];
        let c0 = [1.0, 0.0];
        let c1 = [0.0, 1.0];
        let o = outcome(&[&i0, &i1], &[&c0, &c1]);
        assert_eq!(o.image_choice, [0, 0]);
        assert_eq!(o.caption_choice, [0, 1]);
        assert!(!o.text_correct && o.image_correct && !o.correct());
        // One image, a true and a false caption (SugarCREPE): the image choice is always right.
        let o = outcome(&[&i1], &[&c0, &c1]);
        assert!(o.text_correct && o.image_correct);
        let o = outcome(&[&i1], &[&c1, &c0]);
        assert!(!o.text_correct && o.image_correct);
        // Equal scores: the first wins, as torch's argmax.
        let o = outcome(&[&i0], &[&c0, &c0]);
        assert!(o.text_correct);
        let o = outcome(&[&c1], &[&c0, &c0]);
        assert!(o.text_correct);
        // More images than captions: only the first k = 1 image's choice counts, and caption
        // 0 must pick image 0 among all three.
        let o = outcome(&[&i0, &i1, &c1], &[&c0]);
        assert_eq!(o.image_choice, [0]);
        assert_eq!(o.caption_choice, [0]);
        assert!(o.correct());
        let o = outcome(&[&c1, &i0], &[&c0]);
        assert!(o.text_correct && !o.image_correct);
        let m = metrics(&[o.clone(), outcome(&[&i0], &[&c0, &c1])]);
        assert_eq!(m["text_acc"], 1.0);
        assert_eq!(m["image_acc"], 0.5);
        assert_eq!(m["acc"], 0.5);
    }
}

//! Character-level BLEU-4 as `nltk.translate.bleu_score.sentence_bleu([list(label)], list(pred),
//! smoothing_function=SmoothingFunction().method3)` (nltk 3.10.4, weights 0.25 × 4).
//!
//! Every Unicode scalar value is a token (spaces and punctuation included). Floating-point steps
//! follow nltk: `float(Fraction(num, den))` = `num / den` correctly rounded, method3 replaces a
//! zero-match order by `1 / (2^k · den)`, the weighted logs are summed with `math.fsum`, and the
//! brevity penalty is `exp(1 - r / c)`.

use std::collections::HashMap;

use super::pyfloat::fsum;

const MAX_ORDER: usize = 4;

/// Sentence BLEU-4 (fraction in [0, 1], not ×100) of `hypothesis` against one `reference`.
pub fn sentence_bleu4(reference: &str, hypothesis: &str) -> f64 {
    let hyp: Vec<char> = hypothesis.chars().collect();
    let refc: Vec<char> = reference.chars().collect();

    let mut numerators = [0u64; MAX_ORDER];
    let mut denominators = [0u64; MAX_ORDER];
    for n in 1..=MAX_ORDER {
        let (num, den) = modified_precision(&refc, &hyp, n);
        numerators[n - 1] = num;
        denominators[n - 1] = den;
    }
    // No unigram match: nltk returns the integer 0 before smoothing.
    if numerators[0] == 0 {
        return 0.0;
    }

    // SmoothingFunction().method3 (NIST geometric sequence smoothing).
    let mut p_n = [0.0f64; MAX_ORDER];
    let mut k = 1u32;
    for i in 0..MAX_ORDER {
        p_n[i] = if numerators[i] == 0 {
            let v = 1.0 / ((1u64 << k) * denominators[i]) as f64;
            k += 1;
            v
        } else {
            numerators[i] as f64 / denominators[i] as f64
        };
    }

    let bp = brevity_penalty(refc.len(), hyp.len());
    let s = fsum(p_n.iter().map(|&p| 0.25 * p.ln()));
    bp * s.exp()
}

/// nltk `modified_precision`: clipped n-gram matches and `max(1, hypothesis n-grams)`.
fn modified_precision(reference: &[char], hyp: &[char], n: usize) -> (u64, u64) {
    let mut hyp_counts: HashMap<&[char], u64> = HashMap::new();
    for g in hyp.windows(n) {
        *hyp_counts.entry(g).or_insert(0) += 1;
    }
    let mut ref_counts: HashMap<&[char], u64> = HashMap::new();
    for g in reference.windows(n) {
        if hyp_counts.contains_key(g) {
            *ref_counts.entry(g).or_insert(0) += 1;
        }
    }
    let numerator: u64 = hyp_counts
        .iter()
        .map(|(g, &c)| c.min(ref_counts.get(g).copied().unwrap_or(0)))
        .sum();
    let total: u64 = hyp_counts.values().sum();
    (numerator, total.max(1))
}

/// nltk `brevity_penalty(closest_ref_len, hyp_len)`.
fn brevity_penalty(ref_len: usize, hyp_len: usize) -> f64 {
    if hyp_len > ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nltk_values() {
        // Values from nltk 3.10.4 sentence_bleu([list(r)], list(h), smoothing_function=method3).
        assert_eq!(
            sentence_bleu4(
                "Hello world, this is the test.",
                "Hello world, this is a test."
            ),
            0.8402971749021705
        );
        assert_eq!(sentence_bleu4("宝宝宝宝宝宝", "宝宝"), 0.08047084086794415);
        assert_eq!(
            sentence_bleu4("0987654321", "1234567890"),
            0.07461864740024557
        );
        assert_eq!(sentence_bleu4("abc", "xyz"), 0.0);
        assert_eq!(sentence_bleu4("abc", ""), 0.0);
        assert_eq!(sentence_bleu4("简约百搭", "简约百搭"), 1.0);
    }

    #[test]
    fn clipping_limits_repeated_ngrams() {
        // "aaaa" against "a": one clipped unigram match out of four, orders 2–4 smoothed.
        let (num, den) = modified_precision(&['a'], &['a'; 4], 1);
        assert_eq!((num, den), (1, 4));
        assert_eq!(modified_precision(&['a'], &['a'; 4], 2), (0, 3));
        assert_eq!(modified_precision(&['a'], &['a'], 3), (0, 1));
    }
}

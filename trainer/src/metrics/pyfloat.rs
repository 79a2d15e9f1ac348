//! Python / NumPy numeric and string primitives the reference metrics rely on, reproduced bit for
//! bit: `round(x, ndigits)`, `math.fsum`, `np.mean` (pairwise summation) and `str.isspace`.

/// Python `str.isspace()` for one character: Rust's `char::is_whitespace` plus U+001C–U+001F
/// (file/group/record/unit separators, which Python counts as whitespace and Rust does not).
/// Used by `str.split()` / `str.rstrip()` / `str.strip()` emulation.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{1C}'..='\u{1F}')
}

/// Python `s.split()` (no argument): runs of whitespace separate, no empty pieces.
pub fn py_split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|w| !w.is_empty())
}

/// Python `round(x, ndigits)` for a float and `0 <= ndigits <= 22`: the exact binary value of `x`
/// is rounded to `ndigits` decimals, ties to even (so `round(0.125, 2) == 0.12` but
/// `round(2.675, 2) == 2.67` because 2.675 is stored as 2.67499999…), and the decimal result is
/// converted back to the nearest float.
pub fn py_round(x: f64, ndigits: u32) -> f64 {
    if !x.is_finite() || x == 0.0 || ndigits > 22 {
        return x;
    }
    let bits = x.to_bits();
    let negative = bits >> 63 == 1;
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    // x = mantissa * 2^exp exactly.
    let (mantissa, exp) = if exp_bits == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp_bits - 1075)
    };
    if exp >= 0 {
        return x; // an integer already
    }
    let scale = 10u128.pow(ndigits);
    // |x| * 10^ndigits = num / 2^shift; num < 2^53 * 10^22 < 2^127.
    let num = mantissa as u128 * scale;
    let shift = (-exp) as u32;
    let (q, rem_cmp_half) = if shift >= 128 {
        (0u128, std::cmp::Ordering::Less)
    } else {
        let q = num >> shift;
        let rem = num - (q << shift);
        let half = 1u128 << (shift - 1);
        (q, rem.cmp(&half))
    };
    let q = match rem_cmp_half {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 == 1 => q + 1,
        _ => q,
    };
    // q / 10^ndigits, correctly rounded: both are exact in f64 when q < 2^53 and ndigits <= 22,
    // and IEEE division rounds once, as Python's string-to-float conversion does.
    let value = if q < (1u128 << 53) {
        q as f64 / scale as f64
    } else {
        // Too many digits for one exact division (|x| >= 2^53 / 10^ndigits); fall back to the
        // decimal string, which Rust parses with correct rounding.
        format!("{q}e-{ndigits}").parse::<f64>().unwrap_or(x.abs())
    };
    if negative { -value } else { value }
}

/// Python `math.fsum` over finite values: the correctly rounded sum (Shewchuk partials with
/// CPython's final half-even correction).
pub fn fsum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for mut x in values {
        let mut i = 0;
        for j in 0..partials.len() {
            let mut y = partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[i] = lo;
                i += 1;
            }
            x = hi;
        }
        partials.truncate(i);
        if x != 0.0 {
            partials.push(x);
        }
    }
    let mut n = partials.len();
    if n == 0 {
        return 0.0;
    }
    n -= 1;
    let mut hi = partials[n];
    let mut lo = 0.0;
    while n > 0 {
        let x = hi;
        n -= 1;
        let y = partials[n];
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
        let y = lo * 2.0;
        let x = hi + y;
        let yr = x - hi;
        if y == yr {
            hi = x;
        }
    }
    hi
}

/// NumPy's float64 `add.reduce` over a contiguous array: pairwise summation with 8 accumulators
/// in blocks of at most 128 values (`DOUBLE_pairwise_sum`), started from the identity 0.0.
pub fn np_sum(a: &[f64]) -> f64 {
    0.0 + pairwise_sum(a)
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (k, acc) in r.iter_mut().enumerate() {
                *acc += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `float(np.mean(a))` for float64 values (NaN for an empty slice, as NumPy).
pub fn np_mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_matches_python() {
        // Values printed by CPython 3.11 `round(x, n)`.
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(0.375, 2), 0.38);
        assert_eq!(py_round(2.675, 2), 2.67);
        assert_eq!(py_round(0.03125, 4), 0.0312);
        assert_eq!(py_round(30.769230719, 4), 30.7692);
        assert_eq!(py_round(-1.00005, 4), -1.0001);
        assert_eq!(py_round(95.32710230483012, 4), 95.3271);
        assert_eq!(py_round(1.4243290343657082e-14, 4), 0.0);
        assert_eq!(py_round(99.99999995, 4), 100.0);
        // 12345.67895 is stored just below the tie.
        assert_eq!(py_round(12345.67895, 4), 12345.6789);
        assert_eq!(py_round(5e-324, 4), 0.0);
    }

    #[test]
    fn fsum_is_correctly_rounded() {
        assert_eq!(fsum([0.1; 10]), 1.0);
        assert_eq!(
            fsum([1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]),
            1e-100
        );
        assert_eq!(fsum([1e-16, 1.0, 1e16]), 10000000000000002.0);
        assert_eq!(fsum(Vec::<f64>::new()), 0.0);
    }

    #[test]
    fn numpy_pairwise_mean() {
        // 0.1 * 10 summed naively is 0.9999999999999999; NumPy's 8-accumulator sum gives 1.0.
        let a = [0.1; 10];
        assert_eq!(a.iter().sum::<f64>(), 0.9999999999999999);
        assert_eq!(np_sum(&a), 1.0);
        assert_eq!(np_mean(&[1.0, 2.0, 4.0]), 7.0 / 3.0);
        assert!(np_mean(&[]).is_nan());
    }

    #[test]
    fn python_whitespace() {
        assert!(py_isspace('\u{1F}') && py_isspace('\u{3000}') && py_isspace('\n'));
        assert!(!py_isspace('\u{200B}') && !py_isspace('a'));
        assert_eq!(
            py_split_whitespace(" a \u{1C}b\t\n").collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}

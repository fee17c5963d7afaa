//! Evaluation estimators over k samples per problem.

/// The unbiased Pass@k of Chen et al. (2021) for one problem with `n` samples of which `c` are
/// correct: 1 - C(n-c, k) / C(n, k), as a product so that large `n` cannot overflow.
/// `k` larger than `n` is clamped to `n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    let k = k.min(n);
    if n == 0 || k == 0 {
        return 0.0;
    }
    if n - c.min(n) < k {
        return 1.0;
    }
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    1.0 - miss
}

/// Mean@k and Pass@k over problems, each with its standard error over problems.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean_at_k: f64,
    pub pass_at_k: f64,
    pub mean_at_k_se: f64,
    pub pass_at_k_se: f64,
}

/// Mean@k and Pass@k over problems, each given as (samples, correct samples).
pub fn mean_and_pass_at_k(problems: &[(usize, usize)], k: usize) -> (f64, f64) {
    let e = estimate(problems, k);
    (e.mean_at_k, e.pass_at_k)
}

/// Mean@k and Pass@k over problems, each given as (samples, correct samples), with standard
/// errors: a problem's samples are not independent of each other, so the unit is the problem.
pub fn estimate(problems: &[(usize, usize)], k: usize) -> Estimate {
    let means: Vec<f64> = problems
        .iter()
        .map(|&(n, c)| if n == 0 { 0.0 } else { c as f64 / n as f64 })
        .collect();
    let passes: Vec<f64> = problems.iter().map(|&(n, c)| pass_at_k(n, c, k)).collect();
    let (mean_at_k, mean_at_k_se) = mean_and_se(&means);
    let (pass_at_k, pass_at_k_se) = mean_and_se(&passes);
    Estimate {
        mean_at_k,
        pass_at_k,
        mean_at_k_se,
        pass_at_k_se,
    }
}

/// The mean of `values` and its standard error (sample standard deviation over the square root
/// of the count; 0 for fewer than two values).
pub fn mean_and_se(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by counting subsets.
    fn binomial(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).map(|i| (n - i) as f64 / (i + 1) as f64).product()
    }

    #[test]
    fn pass_at_k_matches_the_binomial_definition() {
        for n in 1..=16u64 {
            for c in 0..=n {
                for k in 1..=n {
                    let exact = 1.0 - binomial(n - c, k) / binomial(n, k);
                    let got = pass_at_k(n as usize, c as usize, k as usize);
                    assert!(
                        (got - exact).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(pass_at_k(16, 0, 16), 0.0);
        assert_eq!(pass_at_k(16, 1, 16), 1.0);
        assert_eq!(pass_at_k(4, 1, 1), 0.25);
        assert_eq!(pass_at_k(0, 0, 1), 0.0);
        assert_eq!(pass_at_k(2, 1, 5), 1.0, "k is clamped to n");
        assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
    }

    #[test]
    fn mean_and_pass_average_over_problems() {
        let (mean, pass) = mean_and_pass_at_k(&[(4, 0), (4, 4), (4, 2)], 4);
        assert!((mean - 0.5).abs() < 1e-12);
        assert!((pass - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean_and_pass_at_k(&[], 4), (0.0, 0.0));
    }

    #[test]
    fn standard_errors_are_over_problems() {
        // Two problems, one always right and one always wrong: mean 0.5, sd 0.707, se 0.5.
        let e = estimate(&[(4, 4), (4, 0)], 4);
        assert_eq!((e.mean_at_k, e.pass_at_k), (0.5, 0.5));
        assert!((e.mean_at_k_se - 0.5).abs() < 1e-12);
        assert_eq!(estimate(&[(4, 2)], 4).mean_at_k_se, 0.0);
    }
}

//! L-BFGS as scipy's L-BFGS-B (Byrd, Lu, Nocedal and Zhu; v3.0, as scipy ships it) runs on a
//! problem without bounds, which is what scikit-learn's `LogisticRegression(solver="lbfgs")`
//! calls. Our own code, written for exactness: the linear probe must stop where scikit-learn
//! stops, and a different L-BFGS (another line search, another stopping rule) ends on another
//! point of an ill-conditioned optimum's neighbourhood, where a few percent of the predictions
//! differ (docs/PERFORMANCE.md, session 24).
//!
//! Without bounds, L-BFGS-B's Cauchy point and subspace minimisation reduce to the step
//! `-H g` of the limited-memory BFGS matrix with `H0 = (s'y / y'y) I` (the latest pair; `I`
//! with no pairs), here by the two-loop recursion. What the algorithm does around it is kept:
//! the first step is `1 / ||d||` long, later ones start at 1; the line search is Moré and
//! Thuente's (MINPACK-2 `dcsrch`, sufficient decrease 1e-3, curvature 0.9, interval 0.1); a pair
//! whose `s'y` is not above `eps * (-g's)` is skipped; a failed line search (or an ascent
//! direction) forgets the pairs and starts again from `-g`, and ends the run when there were
//! none. After each iteration the checks run in scipy's order: `max_iter` iterations,
//! `max_fun` evaluations, the gradient's largest component at most `gtol`, the loss's drop at
//! most `ftol * max(|f_prev|, |f|, 1)`.

use std::collections::VecDeque;

/// How a run is set up.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Pairs kept (scipy's `maxcor`).
    pub memory: usize,
    pub max_iter: u64,
    /// Largest gradient component at which the run has converged (`gtol`).
    pub gtol: f64,
    /// Relative loss drop at which the run has converged (`ftol`).
    pub ftol: f64,
    /// Evaluations one line search may make (`maxls`).
    pub max_ls: usize,
    /// Evaluations after which the run stops at its next iterate (`maxfun`).
    pub max_fun: usize,
}

impl Options {
    /// scikit-learn's call: 10 pairs, `gtol = tol`, `ftol = 64 eps`, `maxls = 50`.
    pub fn sklearn(max_iter: u64, tol: f64) -> Self {
        Self {
            memory: 10,
            max_iter,
            gtol: tol,
            ftol: 64.0 * f64::EPSILON,
            max_ls: 50,
            max_fun: 15_000,
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The gradient's largest component is within `gtol`.
    Gradient,
    /// The loss dropped by at most `ftol` (relative).
    Reduction,
    MaxIter,
    MaxFun,
    /// A line search failed with no pairs to forget.
    LineSearch,
}

/// The end of a run: the last accepted point.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub x: Vec<f64>,
    pub f: f64,
    pub iterations: u64,
    pub evaluations: usize,
    pub stop: Stop,
}

impl Stop {
    /// What the result JSON calls it.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Gradient => "gradient",
            Stop::Reduction => "loss_reduction",
            Stop::MaxIter => "max_iter",
            Stop::MaxFun => "max_evaluations",
            Stop::LineSearch => "line_search",
        }
    }

    /// Stopped on a convergence test (not a limit or a failed search).
    pub fn converged(self) -> bool {
        matches!(self, Stop::Gradient | Stop::Reduction)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The largest magnitude; NaN when any entry is (so a NaN gradient never passes `gtol`).
fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m: f64, x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(x.abs())
        }
    })
}

/// One stored pair: `s`, `y` and `s'y`.
struct Pair {
    s: Vec<f64>,
    y: Vec<f64>,
    sy: f64,
}

/// `-H g` by the two-loop recursion, `H0 = I / theta`.
fn direction(g: &[f64], pairs: &VecDeque<Pair>, theta: f64) -> Vec<f64> {
    let mut q = g.to_vec();
    let mut alpha = vec![0.0; pairs.len()];
    for (i, p) in pairs.iter().enumerate().rev() {
        alpha[i] = dot(&p.s, &q) / p.sy;
        q.iter_mut().zip(&p.y).for_each(|(v, y)| *v -= alpha[i] * y);
    }
    q.iter_mut().for_each(|v| *v /= theta);
    for (i, p) in pairs.iter().enumerate() {
        let b = dot(&p.y, &q) / p.sy;
        q.iter_mut()
            .zip(&p.s)
            .for_each(|(v, s)| *v += (alpha[i] - b) * s);
    }
    q.iter_mut().for_each(|v| *v = -*v);
    q
}

/// Minimises `fg` (the loss and its gradient) from `x0`. `fg`'s error ends the run.
pub fn minimize<E>(
    mut fg: impl FnMut(&[f64]) -> Result<(f64, Vec<f64>), E>,
    x0: Vec<f64>,
    o: &Options,
) -> Result<Outcome, E> {
    let mut x = x0;
    let (mut f, mut g) = fg(&x)?;
    let mut evaluations = 1usize;
    let mut iterations = 0u64;
    let done = |x, f, iterations, evaluations, stop| Outcome {
        x,
        f,
        iterations,
        evaluations,
        stop,
    };
    if max_abs(&g) <= o.gtol {
        return Ok(done(x, f, 0, evaluations, Stop::Gradient));
    }
    let mut pairs: VecDeque<Pair> = VecDeque::with_capacity(o.memory);
    let mut theta = 1.0;
    loop {
        let d = if pairs.is_empty() {
            g.iter().map(|v| -v / theta).collect()
        } else {
            direction(&g, &pairs, theta)
        };
        let dnorm = dot(&d, &d).sqrt();
        let mut stp = if iterations == 0 {
            (1.0 / dnorm).min(STP_MAX)
        } else {
            1.0
        };
        let (x_old, g_old, f_old) = (x.clone(), g.clone(), f);
        let gd_old = dot(&g, &d);
        // The line search: Ok(last step's gd) when it converged, Err when it failed.
        let searched = if gd_old >= 0.0 {
            Err(())
        } else {
            let mut ls = Search::start(f, gd_old, stp);
            let mut tries = 0usize;
            loop {
                // The step to evaluate next (the first one as chosen above).
                if tries >= o.max_ls {
                    break Err(());
                }
                x.iter_mut()
                    .zip(&x_old)
                    .zip(&d)
                    .for_each(|((xi, t), di)| *xi = stp * di + t);
                let (fv, gv) = fg(&x)?;
                evaluations += 1;
                tries += 1;
                f = fv;
                g = gv;
                let gd = dot(&g, &d);
                match ls.next(f, gd, &mut stp) {
                    Task::Evaluate => continue,
                    Task::Done => break Ok(gd),
                }
            }
        };
        let gd = match searched {
            Ok(gd) => gd,
            Err(()) => {
                x = x_old;
                g = g_old;
                f = f_old;
                if pairs.is_empty() {
                    return Ok(done(x, f, iterations + 1, evaluations, Stop::LineSearch));
                }
                pairs.clear();
                theta = 1.0;
                continue;
            }
        };
        iterations += 1;
        if iterations >= o.max_iter {
            return Ok(done(x, f, iterations, evaluations, Stop::MaxIter));
        }
        if evaluations > o.max_fun {
            return Ok(done(x, f, iterations, evaluations, Stop::MaxFun));
        }
        if max_abs(&g) <= o.gtol {
            return Ok(done(x, f, iterations, evaluations, Stop::Gradient));
        }
        if f_old - f <= o.ftol * f_old.abs().max(f.abs()).max(1.0) {
            return Ok(done(x, f, iterations, evaluations, Stop::Reduction));
        }
        // The pair, with s'y from the two directional derivatives, as L-BFGS-B forms it.
        let y: Vec<f64> = g.iter().zip(&g_old).map(|(a, b)| a - b).collect();
        let yy = dot(&y, &y);
        let (sy, scale) = if stp == 1.0 {
            (gd - gd_old, -gd_old)
        } else {
            ((gd - gd_old) * stp, -gd_old * stp)
        };
        if sy <= f64::EPSILON * scale {
            continue;
        }
        if pairs.len() == o.memory {
            pairs.pop_front();
        }
        pairs.push_back(Pair {
            s: d.iter().map(|v| v * stp).collect(),
            y,
            sy,
        });
        theta = yy / sy;
    }
}

/// The largest step of a line search without bounds (L-BFGS-B's `big`).
const STP_MAX: f64 = 1e10;

/// What the line search asks for after a trial step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// The loss and gradient at the new `stp`.
    Evaluate,
    /// The last step is accepted (converged, or a warning that no better one can be found).
    Done,
}

/// Moré and Thuente's line search as MINPACK-2's `dcsrch` runs it, on `phi(stp) = f(x + stp d)`
/// with slope `gd`; `stpmin = 0`, `stpmax = STP_MAX`.
struct Search {
    brackt: bool,
    stage1: bool,
    ginit: f64,
    gtest: f64,
    finit: f64,
    width: f64,
    width1: f64,
    stx: f64,
    fx: f64,
    gx: f64,
    sty: f64,
    fy: f64,
    gy: f64,
    stmin: f64,
    stmax: f64,
}

const FTOL: f64 = 1e-3;
const GTOL: f64 = 0.9;
const XTOL: f64 = 0.1;
const XTRAPL: f64 = 1.1;
const XTRAPU: f64 = 4.0;

impl Search {
    /// A search from `phi(0) = f`, `phi'(0) = g < 0`, first trying `stp`.
    fn start(f: f64, g: f64, stp: f64) -> Self {
        let width = STP_MAX;
        Self {
            brackt: false,
            stage1: true,
            ginit: g,
            gtest: FTOL * g,
            finit: f,
            width,
            width1: width / 0.5,
            stx: 0.0,
            fx: f,
            gx: g,
            sty: 0.0,
            fy: f,
            gy: g,
            stmin: 0.0,
            stmax: stp + XTRAPU * stp,
        }
    }

    /// `phi(stp) = f`, `phi'(stp) = g`: done, or the next `stp` to try.
    fn next(&mut self, f: f64, g: f64, stp: &mut f64) -> Task {
        let s = *stp;
        let ftest = self.finit + s * self.gtest;
        if self.stage1 && f <= ftest && g >= 0.0 {
            self.stage1 = false;
        }
        // The warnings end the search on the current step, as convergence does.
        let stuck = (self.brackt
            && (s <= self.stmin
                || s >= self.stmax
                || self.stmax - self.stmin <= XTOL * self.stmax))
            || (s == STP_MAX && f <= ftest && g <= self.gtest)
            || (s == 0.0 && (f > ftest || g >= self.gtest));
        if stuck || (f <= ftest && g.abs() <= GTOL * -self.ginit) {
            return Task::Done;
        }
        let mut next = s;
        if self.stage1 && f <= self.fx && f > ftest {
            // The modified function psi(stp) = phi(stp) - phi(0) - stp * gtest while no step has
            // met the sufficient decrease with a non-negative slope.
            let gt = self.gtest;
            let mut fxm = self.fx - self.stx * gt;
            let mut fym = self.fy - self.sty * gt;
            let mut gxm = self.gx - gt;
            let mut gym = self.gy - gt;
            step(
                Side {
                    st: &mut self.stx,
                    f: &mut fxm,
                    g: &mut gxm,
                },
                Side {
                    st: &mut self.sty,
                    f: &mut fym,
                    g: &mut gym,
                },
                &mut next,
                f - s * gt,
                g - gt,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
            self.fx = fxm + self.stx * gt;
            self.fy = fym + self.sty * gt;
            self.gx = gxm + gt;
            self.gy = gym + gt;
        } else {
            step(
                Side {
                    st: &mut self.stx,
                    f: &mut self.fx,
                    g: &mut self.gx,
                },
                Side {
                    st: &mut self.sty,
                    f: &mut self.fy,
                    g: &mut self.gy,
                },
                &mut next,
                f,
                g,
                &mut self.brackt,
                self.stmin,
                self.stmax,
            );
        }
        if self.brackt {
            // Bisect when the interval did not shrink enough over two steps.
            if (self.sty - self.stx).abs() >= 0.66 * self.width1 {
                next = self.stx + 0.5 * (self.sty - self.stx);
            }
            self.width1 = self.width;
            self.width = (self.sty - self.stx).abs();
            self.stmin = self.stx.min(self.sty);
            self.stmax = self.stx.max(self.sty);
        } else {
            self.stmin = next + XTRAPL * (next - self.stx);
            self.stmax = next + XTRAPU * (next - self.stx);
        }
        next = next.clamp(0.0, STP_MAX);
        if self.brackt
            && (next <= self.stmin
                || next >= self.stmax
                || self.stmax - self.stmin <= XTOL * self.stmax)
        {
            next = self.stx;
        }
        *stp = next;
        Task::Evaluate
    }
}

/// One end of the search interval: step, value, slope.
struct Side<'a> {
    st: &'a mut f64,
    f: &'a mut f64,
    g: &'a mut f64,
}

/// MINPACK-2's `dcstep`: a safeguarded cubic or quadratic step from the interval's ends `x`
/// (the best step so far) and `y` and the trial `stp`, then the interval updated to hold a
/// minimiser.
#[allow(clippy::too_many_arguments)]
fn step(
    x: Side,
    y: Side,
    stp: &mut f64,
    fp: f64,
    dp: f64,
    brackt: &mut bool,
    stpmin: f64,
    stpmax: f64,
) {
    let (stx, fx, dx) = (*x.st, *x.f, *x.g);
    let (sty, fy, dy) = (*y.st, *y.f, *y.g);
    let st = *stp;
    // The slopes' relative sign, as MINPACK-2 forms it.
    let sgnd = dp * (dx / dx.abs());
    // The minimiser of the cubic through (stx, fx, dx) and (st, fp, dp), and its gamma sign.
    let cubic = |toward_x_sign: bool, clamp_root: bool| {
        let theta = 3.0 * (fx - fp) / (st - stx) + dx + dp;
        let s = theta.abs().max(dx.abs()).max(dp.abs());
        let disc = (theta / s).powi(2) - (dx / s) * (dp / s);
        let mut gamma = s * if clamp_root { disc.max(0.0) } else { disc }.sqrt();
        if toward_x_sign {
            gamma = -gamma;
        }
        (theta, gamma)
    };
    let stpf;
    if fp > fx {
        // Case 1: a higher value; the minimum is bracketed.
        let (theta, gamma) = cubic(st < stx, false);
        let p = (gamma - dx) + theta;
        let q = ((gamma - dx) + gamma) + dp;
        let stpc = stx + p / q * (st - stx);
        let stpq = stx + ((dx / ((fx - fp) / (st - stx) + dx)) / 2.0) * (st - stx);
        stpf = if (stpc - stx).abs() < (stpq - stx).abs() {
            stpc
        } else {
            stpc + (stpq - stpc) / 2.0
        };
        *brackt = true;
    } else if sgnd < 0.0 {
        // Case 2: lower, and the slopes have opposite signs; bracketed.
        let (theta, gamma) = cubic(st > stx, false);
        let p = (gamma - dp) + theta;
        let q = ((gamma - dp) + gamma) + dx;
        let stpc = st + p / q * (stx - st);
        let stpq = st + (dp / (dp - dx)) * (stx - st);
        stpf = if (stpc - st).abs() > (stpq - st).abs() {
            stpc
        } else {
            stpq
        };
        *brackt = true;
    } else if dp.abs() < dx.abs() {
        // Case 3: lower, same slope sign, the slope's size decreases.
        let (theta, gamma) = cubic(st > stx, true);
        let p = (gamma - dp) + theta;
        let q = (gamma + (dx - dp)) + gamma;
        let r = p / q;
        let stpc = if r < 0.0 && gamma != 0.0 {
            st + r * (stx - st)
        } else if st > stx {
            stpmax
        } else {
            stpmin
        };
        let stpq = st + (dp / (dp - dx)) * (stx - st);
        if *brackt {
            let f = if (stpc - st).abs() < (stpq - st).abs() {
                stpc
            } else {
                stpq
            };
            stpf = if st > stx {
                f.min(st + 0.66 * (sty - st))
            } else {
                f.max(st + 0.66 * (sty - st))
            };
        } else {
            let f = if (stpc - st).abs() > (stpq - st).abs() {
                stpc
            } else {
                stpq
            };
            stpf = f.min(stpmax).max(stpmin);
        }
    } else {
        // Case 4: lower, same slope sign, the slope does not decrease.
        stpf = if *brackt {
            let theta = 3.0 * (fp - fy) / (sty - st) + dy + dp;
            let s = theta.abs().max(dy.abs()).max(dp.abs());
            let mut gamma = s * ((theta / s).powi(2) - (dy / s) * (dp / s)).sqrt();
            if st > sty {
                gamma = -gamma;
            }
            let p = (gamma - dp) + theta;
            let q = ((gamma - dp) + gamma) + dy;
            st + p / q * (sty - st)
        } else if st > stx {
            stpmax
        } else {
            stpmin
        };
    }
    // The interval keeps a minimiser: the trial replaces one end.
    if fp > fx {
        *y.st = st;
        *y.f = fp;
        *y.g = dp;
    } else {
        if sgnd < 0.0 {
            *y.st = stx;
            *y.f = fx;
            *y.g = dx;
        }
        *x.st = st;
        *x.f = fp;
        *x.g = dp;
    }
    *stp = stpf;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rosenbrock's function in n dimensions.
    fn rosenbrock(x: &[f64]) -> Result<(f64, Vec<f64>), ()> {
        let mut f = 0.0;
        let mut g = vec![0.0; x.len()];
        for i in 0..x.len() - 1 {
            let (a, b) = (1.0 - x[i], x[i + 1] - x[i] * x[i]);
            f += a * a + 100.0 * b * b;
            g[i] += -2.0 * a - 400.0 * x[i] * b;
            g[i + 1] += 200.0 * b;
        }
        Ok((f, g))
    }

    #[test]
    fn finds_rosenbrocks_minimum() {
        let o = Options::sklearn(1000, 1e-8);
        let r = minimize(rosenbrock, vec![-1.2, 1.0, -1.2, 1.0], &o).unwrap();
        assert!(r.stop.converged(), "{:?}", r.stop);
        for v in &r.x {
            assert!((v - 1.0).abs() < 1e-5, "{:?}", r.x);
        }
    }

    #[test]
    fn a_quadratic_stops_on_the_gradient_and_max_iter_is_counted() {
        // f = sum c_i x_i^2 / 2: ill-conditioned, minimum at 0.
        let c = [1.0, 10.0, 100.0, 1000.0];
        let fg = |x: &[f64]| -> Result<(f64, Vec<f64>), ()> {
            let f = x.iter().zip(&c).map(|(v, c)| 0.5 * c * v * v).sum();
            Ok((f, x.iter().zip(&c).map(|(v, c)| c * v).collect()))
        };
        let r = minimize(fg, vec![1.0; 4], &Options::sklearn(1000, 1e-10)).unwrap();
        // Near zero the loss's relative drop (to max(|f|, 1)) ends it, as in scipy.
        assert!(r.stop.converged(), "{:?}", r.stop);
        assert!(max_abs(&r.x) < 1e-6, "{:?}", r.x);
        let r = minimize(fg, vec![1.0; 4], &Options::sklearn(1000, 1e-3)).unwrap();
        assert_eq!(r.stop, Stop::Gradient);
        let r = minimize(fg, vec![1.0; 4], &Options::sklearn(2, 1e-10)).unwrap();
        assert_eq!((r.stop, r.iterations), (Stop::MaxIter, 2));
        // At the minimum already: no iteration.
        let r = minimize(fg, vec![0.0; 4], &Options::sklearn(10, 1e-10)).unwrap();
        assert_eq!(
            (r.stop, r.iterations, r.evaluations),
            (Stop::Gradient, 0, 1)
        );
    }

    #[test]
    fn a_nan_loss_is_never_converged() {
        let r = minimize(
            |x: &[f64]| -> Result<(f64, Vec<f64>), ()> { Ok((f64::NAN, vec![f64::NAN; x.len()])) },
            vec![1.0, 2.0],
            &Options::sklearn(100, 1e-4),
        )
        .unwrap();
        assert!(!r.stop.converged(), "{:?}", r.stop);
    }

    #[test]
    fn the_loss_errors_end_the_run() {
        let mut n = 0;
        // The start is evaluated; the first trial step's evaluation fails.
        let r = minimize(
            |x: &[f64]| {
                n += 1;
                if n > 1 {
                    Err("boom")
                } else {
                    Ok((x[0] * x[0], vec![2.0 * x[0]]))
                }
            },
            vec![3.0],
            &Options::sklearn(100, 0.0),
        );
        assert!(matches!(r, Err("boom")));
        assert_eq!(n, 2);
    }
}

//! `--sweep FLAG=V1,V2,...`: one fresh run per value of any flag of `local` (a core or driver
//! knob: `batch-size`, `max-batch-delay-ms`, `pipeline-depth`, `verify-batch`, `cores`, ...), the
//! way `--rates` sweeps the input rate. This is how users tune batch sizes: the sweep's table and
//! latency-against-throughput plot show each value side by side.
//!
//! Each run's flags are the command line as given with `--FLAG=VALUE` added last, parsed again by
//! the same parser, so every flag's own checks and defaults apply and no flag needs code here.

use serde::{Deserialize, Serialize};

use super::args::LocalArgs;

/// Flags a sweep cannot vary: they choose what the command does or where it writes.
const NOT_SWEPT: &[&str] = &["sweep", "rates", "out", "json", "chaos", "keep-testbed"];
/// Most values one sweep runs.
const MAX_VALUES: usize = 32;

/// Which value of which flag a run of a sweep used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The flag, without its dashes.
    pub flag: String,
    /// Its value in this run.
    pub value: String,
}

/// `FLAG=V1,V2,...` split into the flag and its values.
pub fn parse(spec: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (flag, values) = spec.split_once('=').ok_or_else(|| {
        anyhow::anyhow!("--sweep {spec}: expected FLAG=V1,V2,... (e.g. batch-size=100000,500000)")
    })?;
    let flag = flag.trim().trim_start_matches('-').to_string();
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if flag.is_empty() || values.is_empty() {
        anyhow::bail!("--sweep {spec}: expected FLAG=V1,V2,... with at least one value");
    }
    if NOT_SWEPT.contains(&flag.as_str()) {
        anyhow::bail!("--sweep cannot vary --{flag}");
    }
    if values.len() > MAX_VALUES {
        anyhow::bail!("--sweep {flag}: at most {MAX_VALUES} values");
    }
    Ok((flag, values))
}

/// The runs of `args`: one per `--sweep` value (its flags parsed again by `reparse` with
/// `--FLAG=VALUE` added), or `args` itself without a sweep.
pub fn runs(
    args: &LocalArgs,
    reparse: &dyn Fn(&str) -> anyhow::Result<LocalArgs>,
) -> anyhow::Result<Vec<(Option<SweepPoint>, LocalArgs)>> {
    let Some(spec) = &args.sweep else {
        return Ok(vec![(None, args.clone())]);
    };
    if args.rates.is_some() {
        anyhow::bail!("--sweep and --rates: sweep one thing at a time (give --rate for a --sweep)");
    }
    let (flag, values) = parse(spec)?;
    values
        .into_iter()
        .map(|value| {
            let run = reparse(&format!("--{flag}={value}"))
                .map_err(|e| anyhow::anyhow!("--sweep {flag}={value}: {e}"))?;
            run.validate()?;
            Ok((
                Some(SweepPoint {
                    flag: flag.clone(),
                    value,
                }),
                run,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_names_one_flag_and_its_values() {
        let (flag, values) = parse("batch-size=100000, 500000,").unwrap();
        assert_eq!(flag, "batch-size");
        assert_eq!(values, ["100000", "500000"]);
        assert_eq!(parse("--pipeline-depth=1").unwrap().0, "pipeline-depth");
        for bad in ["batch-size", "=1,2", "batch-size=", "rates=1,2", "out=a,b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let many = format!("cores={}", vec!["4"; MAX_VALUES + 1].join(","));
        assert!(parse(&many).is_err());
    }
}

//! `cluster --flamegraph`: every core host recorded its core with perf (`cpu-clock`, DWARF call
//! graphs at 99 Hz, so any release build unwinds) and rendered the samples to text with `perf script` on
//! the host, where the binary and its symbols are; the collect role brought the text back. Here
//! it is folded and drawn with inferno (`scripts/inferno.sh`, installed on first use) into
//! `flamegraph-core-<i>.svg` beside the report.

use std::path::Path;
use std::process::{Command, Stdio};

use super::plan::Plan;

/// Installs inferno if needed (before the run: it needs crates.io, which a test host's
/// controller namespace cannot reach).
pub fn install() -> anyhow::Result<()> {
    let status = Command::new("bash")
        .args(["scripts/inferno.sh", "--install"])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("run scripts/inferno.sh: {e}"))?;
    if !status.success() {
        anyhow::bail!(
            "scripts/inferno.sh --install failed ({status}); on test hosts run it once outside \
             the namespaces first"
        );
    }
    Ok(())
}

/// Renders every core's recording that came back; returns the SVG file names written.
pub fn render_all(dir: &Path, plan: &Plan) -> Vec<String> {
    let mut written = Vec::new();
    for (host, p) in plan {
        for perf in p.processes.iter().filter(|p| p.kind == "perf") {
            let Some(text) = &perf.after_stdout else {
                continue;
            };
            let core = perf.name.trim_start_matches("perf-");
            let input = dir.join("hosts").join(host).join(text);
            let svg = format!("flamegraph-{core}.svg");
            let title = format!("sleepyseal cluster: {core} on {host}");
            match render(&input, &dir.join(&svg), &title) {
                Ok(()) => written.push(svg),
                Err(e) => eprintln!("warning: no flamegraph of {core} on {host}: {e:#}"),
            }
        }
    }
    written
}

/// `perf script` text → folded stacks → SVG.
fn render(input: &Path, svg: &Path, title: &str) -> anyhow::Result<()> {
    let folded = svg.with_extension("folded");
    run(
        Command::new("bash")
            .args(["scripts/inferno.sh", "collapse-perf", "--all"])
            .arg(input),
        &folded,
    )?;
    run(
        Command::new("bash")
            .args([
                "scripts/inferno.sh",
                "flamegraph",
                "--width",
                "1600",
                "--title",
                title,
            ])
            .arg(&folded),
        svg,
    )?;
    let _ = std::fs::remove_file(&folded);
    Ok(())
}

fn run(command: &mut Command, stdout: &Path) -> anyhow::Result<()> {
    let out = std::fs::File::create(stdout)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(out)
        .status()
        .map_err(|e| anyhow::anyhow!("run {command:?}: {e}"))?;
    if !status.success() {
        anyhow::bail!("{command:?} failed ({status})");
    }
    Ok(())
}

//! The plan as text: every item with its size and phases, the peak of each phase, the total.

use std::fmt::Write as _;

use super::estimate::human;
use super::{MemoryPlan, Phase, Target};

/// The table `glm-tune plan` prints and `glm-tune run` logs.
pub fn table(plan: &MemoryPlan) -> String {
    let mut out = String::new();
    let what = match plan.target {
        Target::ProcessRss => "process resident memory",
        Target::DeviceMemory => "device memory",
    };
    let _ = writeln!(out, "memory plan ({what}): {}", plan.summary);
    let width = plan
        .items
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut group = "";
    for item in &plan.items {
        if item.group != group {
            group = item.group;
            let _ = writeln!(out, "  {group}");
        }
        let phases: Vec<&str> = item.phases.iter().map(|p| p.name()).collect();
        let _ = writeln!(
            out,
            "    {:<width$}  {:>10}  [{}]  {}",
            item.name,
            human(item.bytes),
            phases.join(","),
            item.detail
        );
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "  for comparison (not summed)");
        for note in &plan.notes {
            let _ = writeln!(out, "    {:<width$}  {:>10}", note.name, human(note.bytes));
        }
    }
    let _ = writeln!(out, "  peak per phase (sum of the items alive in it)");
    let peak = plan.peak_phase();
    for &phase in &plan.phases {
        let mark = if Some(phase) == peak { "  <- peak" } else { "" };
        let _ = writeln!(
            out,
            "    {:<width$}  {:>10}{mark}",
            phase_label(phase),
            human(plan.phase_peak(phase))
        );
    }
    let _ = writeln!(out, "  total peak: {}", human(plan.total_peak()));
    out
}

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Load => "loading model and data",
        Phase::Train => "training",
        Phase::Forward => "forward pass",
        Phase::Generate => "generation (eval/predict)",
    }
}

//! What the brokers reported during a run: the `metrics.jsonl` the harness scrapes each second
//! from every node's `/metrics` (one [`Sample`] per node per scrape; a node that was down or
//! cut off is a sample with `up: false` and the error, not a gap), the leader changes and ISR
//! sizes derived from it, and the report's broker timeline: per partition, who led it with
//! which epoch and how large its ISR was, beside the fault bands (each naming its nodes) and
//! the clients' outcomes per second.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One partition as one broker reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionSample {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The leader this broker's metadata names (-1: none known).
    pub leader: i32,
    /// Whether this broker is the leader (by its own replication state).
    pub is_leader: bool,
    /// Leader epoch this broker is at.
    pub epoch: i32,
    /// ISR members this broker knows of.
    pub isr: Vec<i32>,
    /// High watermark.
    pub hw: i64,
    /// Log end offset.
    pub leo: i64,
    /// On the leader, the offset its epoch starts at: its log end when it was elected (None:
    /// not the leader, or not reported; runs recorded before it was have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_start: Option<i64>,
}

/// One scrape of one node's `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Nanoseconds since the test started (the history's time base).
    pub time_ns: u64,
    /// The node (`n1`, ...).
    pub node: String,
    /// Whether the node answered.
    pub up: bool,
    /// Why it did not (`refused`: the process is down; `timeout`: cut off or paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `node.id` as the broker reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_id: Option<i32>,
    /// Whether the broker's metadata has it fenced.
    #[serde(default)]
    pub fenced: bool,
    /// Partitions this broker leads whose ISR is smaller than the replica set.
    #[serde(default)]
    pub under_replicated: u32,
    /// Every partition the broker hosts.
    #[serde(default)]
    pub partitions: Vec<PartitionSample>,
}

/// Reads `metrics.jsonl`: empty when the file is absent (no metrics were scraped); lines that
/// do not parse (a line cut short when the run was killed) are skipped.
pub fn read(path: &Path) -> Vec<Sample> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A partition's leadership as its leader reported it: from `time_ns` on, `leader` (a node
/// name) led at `epoch`, its log ending at `leo` with high watermark `hw`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaderChange {
    /// When the new leader was first seen leading.
    pub time_ns: u64,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The leader's node name.
    pub leader: String,
    /// Its broker id.
    pub broker_id: i32,
    /// The leader epoch.
    pub epoch: i32,
    /// Its log end offset when first seen leading (it may have appended since its election).
    pub leo: i64,
    /// Its log end offset when elected (the offset its epoch starts at), where the leader
    /// reported it.
    pub epoch_start: Option<i64>,
    /// Its high watermark then.
    pub hw: i64,
    /// ISR size then.
    pub isr: usize,
}

/// The node name of a broker id, from the samples (falling back to `n<id>`).
pub fn node_of(samples: &[Sample], broker_id: i32) -> String {
    samples
        .iter()
        .find(|s| s.broker_id == Some(broker_id))
        .map_or_else(|| format!("n{broker_id}"), |s| s.node.clone())
}

/// Every leader change, in time order: a partition's leader as the leader itself reports it,
/// a change each time a higher epoch (or another leader) is first seen.
pub fn leader_changes(samples: &[Sample]) -> Vec<LeaderChange> {
    let mut sorted: Vec<&Sample> = samples.iter().filter(|s| s.up).collect();
    sorted.sort_by_key(|s| s.time_ns);
    let mut last: BTreeMap<(String, i32), (i32, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for s in sorted {
        for p in s.partitions.iter().filter(|p| p.is_leader) {
            let k = (p.topic.clone(), p.partition);
            let newer = match last.get(&k) {
                None => true,
                Some((e, n)) => p.epoch > *e || (p.epoch == *e && *n != s.node),
            };
            if !newer {
                continue;
            }
            last.insert(k, (p.epoch, s.node.clone()));
            out.push(LeaderChange {
                time_ns: s.time_ns,
                topic: p.topic.clone(),
                partition: p.partition,
                leader: s.node.clone(),
                broker_id: s.broker_id.unwrap_or(-1),
                epoch: p.epoch,
                leo: p.leo,
                epoch_start: p.epoch_start,
                hw: p.hw,
                isr: p.isr.len(),
            });
        }
    }
    out
}

/// The leader of `partition` at `time_ns` (the last change at or before it).
pub fn leader_at(changes: &[LeaderChange], partition: i32, time_ns: u64) -> Option<&LeaderChange> {
    changes
        .iter()
        .rev()
        .find(|c| c.partition == partition && c.time_ns <= time_ns)
}

/// ISR size of each partition over time, from its leader's own reports: (time, size).
pub fn isr_sizes(samples: &[Sample]) -> BTreeMap<i32, Vec<(u64, usize)>> {
    let mut out: BTreeMap<i32, Vec<(u64, usize)>> = BTreeMap::new();
    let mut sorted: Vec<&Sample> = samples.iter().filter(|s| s.up).collect();
    sorted.sort_by_key(|s| s.time_ns);
    for s in sorted {
        for p in s.partitions.iter().filter(|p| p.is_leader) {
            out.entry(p.partition)
                .or_default()
                .push((s.time_ns, p.isr.len()));
        }
    }
    out
}

/// A fault band for the timeline: start and end seconds, the kind and the nodes it hit.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultBand {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Kind (`kill`, `partition`, ...).
    pub kind: String,
    /// The nodes it names (empty: not node-targeted).
    pub nodes: String,
}

/// Client outcomes in one time bucket: acknowledged, failed and unknown ops.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcomes {
    /// Ok completions.
    pub ok: u32,
    /// Failed completions.
    pub fail: u32,
    /// Indeterminate completions.
    pub info: u32,
}

/// The colour of a node's leadership lane (by broker id).
fn node_colour(id: i32) -> &'static str {
    const C: [&str; 8] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#e15759",
    ];
    C[id.unsigned_abs() as usize % C.len()]
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Width of the timeline, pixels (as the other plots).
pub const WIDTH: f64 = 960.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 34.0;
const NODE_ROW: f64 = 14.0;

/// The scrape interval: the median gap between one node's successive samples (1 s when
/// there are too few to tell).
fn scrape_interval_ns(samples: &[Sample]) -> u64 {
    let mut by_node: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in samples {
        by_node.entry(&s.node).or_default().push(s.time_ns);
    }
    let mut gaps: Vec<u64> = by_node
        .values_mut()
        .flat_map(|t| {
            t.sort_unstable();
            t.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        })
        .collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().unwrap_or(1_000_000_000)
}

/// The broker timeline as an SVG: a row of fault bands labelled with kind and nodes, one lane
/// per partition (the leader's node as a coloured bar labelled `n2 e3` at each change, the ISR
/// size as a step line inside the lane), and a row of client outcomes per bucket (green ok,
/// red fail, amber unknown, stacked; bucket `i` covers `start_s + i * bucket_s` onwards).
pub fn svg(
    samples: &[Sample],
    bands: &[FaultBand],
    outcomes: &[Outcomes],
    (start_s, bucket_s): (f64, f64),
    end_s: f64,
) -> String {
    let end_s = end_s.max(1.0);
    let changes = leader_changes(samples);
    let isr = isr_sizes(samples);
    let mut partitions: Vec<i32> = changes.iter().map(|c| c.partition).collect();
    partitions.extend(isr.keys());
    partitions.sort_unstable();
    partitions.dedup();
    let max_isr = isr
        .values()
        .flatten()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot_w * (t / end_s).clamp(0.0, 1.0);
    // Rows: fault labels (stacked so overlapping bands stay readable), partitions, outcomes.
    let mut label_rows: Vec<f64> = Vec::new();
    let mut band_row = Vec::new();
    // Where each band's label starts: at the band, or pulled left so it ends inside the plot.
    let mut label_x = Vec::new();
    for b in bands {
        let w = 6.5 * (b.kind.len() + b.nodes.len() + 1) as f64;
        let lx = x(b.start).min(WIDTH - 2.0 - w).max(2.0);
        let row = label_rows
            .iter()
            .position(|end| *end < lx)
            .unwrap_or_else(|| {
                label_rows.push(0.0);
                label_rows.len() - 1
            });
        label_rows[row] = lx + w;
        band_row.push(row);
        label_x.push(lx);
    }
    let label_h = 14.0 * label_rows.len().max(1) as f64 + 6.0;
    let top = 10.0 + label_h;
    let lanes_h = LANE * partitions.len() as f64;
    let mut node_names: Vec<&str> = samples.iter().map(|s| s.node.as_str()).collect();
    node_names.sort_unstable();
    node_names.dedup();
    let nodes_top = top + lanes_h + 4.0;
    let outcome_top = nodes_top + NODE_ROW * node_names.len() as f64 + 8.0;
    let outcome_h = 40.0;
    let axis_y = outcome_top + outcome_h + 4.0;
    let height = axis_y + 30.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"11\" \
         class=\"broker-timeline\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    // Fault bands behind everything, each labelled with its kind and nodes.
    for ((b, row), lx) in bands.iter().zip(&band_row).zip(&label_x) {
        let colour = crate::plots::fault_color(&b.kind);
        let c = format!("rgb({},{},{})", colour.0, colour.1, colour.2);
        let (x0, x1) = (x(b.start), x(b.end).max(x(b.start) + 2.0));
        let label = if b.nodes.is_empty() {
            b.kind.clone()
        } else {
            format!("{} {}", b.kind, b.nodes)
        };
        let _ = write!(
            s,
            "<g class=\"fault-band\"><title>{t}: {a:.1}–{z:.1} s</title>\
             <rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{c}\" \
             fill-opacity=\"0.15\"/><text x=\"{lx:.1}\" y=\"{ty:.1}\" fill=\"{c}\">{t}</text></g>",
            t = esc(&label),
            a = b.start,
            z = b.end,
            y0 = top,
            w = x1 - x0,
            h = axis_y - top,
            ty = 20.0 + 14.0 * *row as f64,
        );
    }
    let interval = scrape_interval_ns(samples) as f64 / 1e9;
    // One lane per partition.
    for (i, p) in partitions.iter().enumerate() {
        let y0 = top + LANE * i as f64;
        let _ = write!(
            s,
            "<text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">partition {p}</text>\
             <line x1=\"{LEFT}\" x2=\"{xe:.1}\" y1=\"{yb:.1}\" y2=\"{yb:.1}\" stroke=\"#ddd\"/>",
            lx = LEFT - 6.0,
            ty = y0 + LANE / 2.0 + 4.0,
            xe = WIDTH - RIGHT,
            yb = y0 + LANE,
        );
        let mine: Vec<&LeaderChange> = changes.iter().filter(|c| c.partition == *p).collect();
        for (j, c) in mine.iter().enumerate() {
            let t0 = c.time_ns as f64 / 1e9;
            let t1 = mine.get(j + 1).map_or(end_s, |n| n.time_ns as f64 / 1e9);
            let _ = write!(
                s,
                "<g class=\"leader-change\" data-partition=\"{p}\" data-leader=\"{n}\" \
                 data-epoch=\"{e}\"><title>partition {p}: {n} leader at epoch {e} from \
                 {t0:.1} s (log end {leo}, high watermark {hw})</title>\
                 <rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"10\" fill=\"{col}\"/>\
                 <line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{y0:.1}\" y2=\"{yb:.1}\" stroke=\"#000\"/>\
                 <text x=\"{tx:.1}\" y=\"{ty:.1}\">{n} e{e}</text></g>",
                n = esc(&c.leader),
                e = c.epoch,
                leo = c.leo,
                hw = c.hw,
                x0 = x(t0),
                y = y0 + 3.0,
                w = (x(t1) - x(t0)).max(1.0),
                col = node_colour(c.broker_id),
                yb = y0 + LANE,
                tx = x(t0) + 2.0,
                ty = y0 + 24.0,
            );
            // While the leader did not answer its scrapes (down or cut off), its bar is faded:
            // the leadership is what it last said, not what it was seen doing.
            for smp in samples.iter().filter(|x| {
                x.node == c.leader
                    && !x.up
                    && x.time_ns >= c.time_ns
                    && (x.time_ns as f64 / 1e9) < t1
            }) {
                let ts = smp.time_ns as f64 / 1e9;
                let _ = write!(
                    s,
                    "<rect class=\"leader-silent\" x=\"{xs:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
                     height=\"10\" fill=\"white\" fill-opacity=\"0.7\"/>",
                    xs = x(ts),
                    y = y0 + 3.0,
                    w = (x((ts + interval).min(t1)) - x(ts)).max(0.5),
                );
            }
        }
        // ISR size as a step line in the lane's lower part.
        if let Some(points) = isr.get(p) {
            let yv = |n: usize| y0 + LANE - 2.0 - 16.0 * n as f64 / max_isr as f64;
            let mut d = String::new();
            let mut prev: Option<usize> = None;
            for (t, n) in points {
                let xt = x(*t as f64 / 1e9);
                match prev {
                    None => {
                        let _ = write!(d, "M{xt:.1},{:.1}", yv(*n));
                    }
                    Some(pn) => {
                        let _ = write!(d, " L{xt:.1},{:.1} L{xt:.1},{:.1}", yv(pn), yv(*n));
                    }
                }
                prev = Some(*n);
            }
            let _ = write!(
                s,
                "<path class=\"isr-size\" d=\"{d}\" fill=\"none\" stroke=\"#333\" \
                 stroke-dasharray=\"3,2\"><title>partition {p}: ISR size (max {max_isr})</title></path>"
            );
        }
    }
    // One row per node: when its /metrics did not answer (red: refused, the process down;
    // amber: timed out, cut off or paused), and when it said it was fenced (grey).
    for (i, n) in node_names.iter().enumerate() {
        let y = nodes_top + NODE_ROW * i as f64;
        let _ = write!(
            s,
            "<text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{n}</text>",
            lx = LEFT - 6.0,
            ty = y + NODE_ROW - 3.0,
            n = esc(n)
        );
        for smp in samples.iter().filter(|x| x.node == *n) {
            let (colour, what) = match (&smp.error, smp.up, smp.fenced) {
                (Some(e), false, _) if e.starts_with("timeout") => ("#db8e00", e.as_str()),
                (Some(e), false, _) => ("#cf222e", e.as_str()),
                (_, true, true) => ("#8c959f", "fenced"),
                _ => continue,
            };
            let t = smp.time_ns as f64 / 1e9;
            let _ = write!(
                s,
                "<rect class=\"node-state\" data-node=\"{n}\" x=\"{x0:.1}\" y=\"{y:.1}\" \
                 width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{n} at {t:.1} s: \
                 {what}</title></rect>",
                n = esc(n),
                x0 = x(t),
                w = (x(t + interval) - x(t)).max(1.0),
                h = NODE_ROW - 4.0,
                what = esc(what),
            );
        }
    }
    // Client outcomes per second, stacked.
    let most = outcomes
        .iter()
        .map(|o| o.ok + o.fail + o.info)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let _ = write!(
        s,
        "<text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">clients</text>",
        lx = LEFT - 6.0,
        ty = outcome_top + outcome_h / 2.0 + 4.0
    );
    for (i, o) in outcomes.iter().enumerate() {
        let t0 = start_s + i as f64 * bucket_s;
        let (x0, x1) = (x(t0), x(t0 + bucket_s));
        let mut y = outcome_top + outcome_h;
        for (n, c) in [(o.ok, "#2ea043"), (o.fail, "#cf222e"), (o.info, "#db8e00")] {
            if n == 0 {
                continue;
            }
            let h = outcome_h * n as f64 / most;
            y -= h;
            let _ = write!(
                s,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{c}\"/>",
                w = (x1 - x0 - 0.5).max(0.5)
            );
        }
    }
    // Time axis.
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{xe:.1}\" y1=\"{axis_y:.1}\" y2=\"{axis_y:.1}\" stroke=\"#000\"/>",
        xe = WIDTH - RIGHT
    );
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|st| end_s / st <= 12.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= end_s + 1e-9 {
        let _ = write!(
            s,
            "<text x=\"{xt:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">{t}</text>",
            xt = x(t),
            ty = axis_y + 14.0
        );
        t += step;
    }
    let _ = write!(
        s,
        "<text x=\"{xm:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\">time since start (s)</text></svg>",
        xm = LEFT + plot_w / 2.0,
        ty = axis_y + 27.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64, node: &str, id: i32, leader: bool, epoch: i32, leo: i64) -> Sample {
        Sample {
            time_ns: t * 1_000_000_000,
            node: node.into(),
            up: true,
            error: None,
            broker_id: Some(id),
            fenced: false,
            under_replicated: 0,
            partitions: vec![PartitionSample {
                topic: "queue".into(),
                partition: 0,
                leader: if leader { id } else { -1 },
                is_leader: leader,
                epoch,
                isr: vec![1, 2],
                hw: leo,
                leo,
                epoch_start: None,
            }],
        }
    }

    #[test]
    fn leader_changes_follow_epochs_and_skip_repeats() {
        let samples = vec![
            sample(1, "n1", 1, true, 1, 10),
            sample(2, "n1", 1, true, 1, 20),
            sample(2, "n2", 2, false, 1, 20),
            Sample {
                up: false,
                error: Some("refused".into()),
                partitions: vec![],
                ..sample(3, "n1", 1, false, 0, 0)
            },
            sample(4, "n2", 2, true, 2, 18),
            // The deposed leader still believes it leads at the old epoch: not a change.
            sample(5, "n1", 1, true, 1, 22),
        ];
        let c = leader_changes(&samples);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[1].leader.as_str(), c[1].epoch, c[1].leo), ("n2", 2, 18));
        assert_eq!(leader_at(&c, 0, 3_500_000_000).map(|c| c.epoch), Some(1));
        let svg = svg(
            &samples,
            &[FaultBand {
                start: 2.5,
                end: 3.5,
                kind: "kill".into(),
                nodes: "n1".into(),
            }],
            &[Outcomes {
                ok: 3,
                fail: 1,
                info: 0,
            }],
            (0.0, 1.0),
            6.0,
        );
        assert!(svg.contains(">kill n1</text>"), "{svg}");
        assert!(svg.contains(">n2 e2</text>"), "{svg}");
        assert!(svg.contains("class=\"isr-size\""));
        assert!(
            svg.contains("data-node=\"n1\" x=\""),
            "n1's unanswered scrape is drawn: {svg}"
        );
    }
}

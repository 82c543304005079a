//! The story as plain-text swim lanes: a column per node, time down the left,
//! arrows drawn between lifelines, `#` on the lifeline of a node holding a lock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::story::{Item, Model};
use super::{header, seconds};

/// Width of the time column, `+12.345s` and a space.
const TIME_WIDTH: usize = 10;

pub(super) fn render(model: &Model) -> String {
    let n = model.participants.len().max(1);
    // 100-160 columns: lanes share about 140, but never so narrow a label won't fit.
    let lane = (140 / n).clamp(26, 46);
    let x = |i: usize| TIME_WIDTH + 2 + i * lane;
    let width = x(n - 1) + lane;
    let index: HashMap<SocketAddr, usize> = model
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i))
        .collect();
    // Locks each lane holds now: a node may hold several.
    let mut holding = vec![0usize; n];

    let mut out = String::new();
    for line in header(model) {
        let _ = writeln!(out, "{line}");
    }
    if model.participants.is_empty() {
        let _ = writeln!(out, "nothing to draw");
        return out;
    }
    let _ = writeln!(
        out,
        "times are seconds since the first event; # marks a node holding a lock"
    );
    let _ = writeln!(out);
    let mut top: Vec<char> = vec![' '; width];
    put(&mut top, 0, "    time");
    for (i, p) in model.participants.iter().enumerate() {
        put(&mut top, x(i), &p.to_string());
    }
    push_line(&mut out, &top);
    push_line(&mut out, &lifelines(&holding, width, x));

    for row in &model.rows {
        let time = format!("{:>w$}", seconds(row.t - model.t0), w = TIME_WIDTH - 1);
        let mut first = true;
        let mut emit = |out: &mut String, mut canvas: Vec<char>| {
            if first {
                put(&mut canvas, 0, &time);
                first = false;
            }
            push_line(out, &canvas);
        };
        match &row.item {
            Item::Arrow {
                from,
                to,
                label,
                reply,
            } => {
                let mut canvas = lifelines(&holding, width, x);
                match (index.get(from), index.get(to)) {
                    (Some(&a), Some(&b)) if a != b => {
                        draw_arrow(&mut canvas, x(a), x(b), label, *reply)
                    }
                    _ => put(&mut canvas, x(0), &format!("{from} -> {to}: {label}")),
                }
                emit(&mut out, canvas);
            }
            Item::Note { at, lines }
            | Item::Enter { at, lines, .. }
            | Item::Exit { at, lines, .. } => {
                let i = index.get(at).copied().unwrap_or(0);
                if matches!(row.item, Item::Enter { .. }) {
                    holding[i] += 1;
                }
                // Notes stay in their lane, except in the last one, which has room.
                let room = if i + 1 == n {
                    lane.max(40) - 3
                } else {
                    lane - 3
                };
                let mut wrapped = Vec::new();
                for l in lines {
                    wrapped.extend(wrap(l, room));
                }
                for (k, text) in wrapped.iter().enumerate() {
                    let mut canvas = lifelines(&holding, width.max(x(i) + 2 + room), x);
                    if k == 0 {
                        canvas[x(i)] = '*';
                    }
                    put(&mut canvas, x(i) + 2, text);
                    emit(&mut out, canvas);
                }
                if let Item::Exit { active: true, .. } = row.item {
                    holding[i] = holding[i].saturating_sub(1);
                }
            }
            Item::Wide { lines } => {
                let mut canvas = vec![' '; width];
                let text = format!(" {} ", lines.join(": "));
                let span = (x(n - 1) + 1).saturating_sub(x(0));
                let start = x(0) + span.saturating_sub(text.len()) / 2;
                for c in canvas.iter_mut().take(x(n - 1) + 1).skip(x(0)) {
                    *c = '=';
                }
                put(&mut canvas, start, &text);
                emit(&mut out, canvas);
            }
            Item::Release { at, .. } => {
                if let Some(&i) = index.get(at) {
                    holding[i] = holding[i].saturating_sub(1);
                }
            }
        }
    }
    push_line(&mut out, &lifelines(&holding, width, x));
    out
}

fn lifelines(holding: &[usize], width: usize, x: impl Fn(usize) -> usize) -> Vec<char> {
    let mut canvas = vec![' '; width];
    for (i, h) in holding.iter().enumerate() {
        if let Some(c) = canvas.get_mut(x(i)) {
            *c = if *h > 0 { '#' } else { '|' };
        }
    }
    canvas
}

/// Writes `text` at column `at`, growing the line if needed.
fn put(canvas: &mut Vec<char>, at: usize, text: &str) {
    for (k, c) in text.chars().enumerate() {
        let c = if c.is_ascii() && !c.is_ascii_control() {
            c
        } else {
            '?'
        };
        match canvas.get_mut(at + k) {
            Some(slot) => *slot = c,
            None => {
                canvas.resize(at + k, ' ');
                canvas.push(c);
            }
        }
    }
}

/// `|----REQUEST 1 ts=11---->|` or `|<....REPLY 1.....|` between two lifelines.
fn draw_arrow(canvas: &mut [char], a: usize, b: usize, label: &str, reply: bool) {
    let body = if reply { '.' } else { '-' };
    let (lo, hi) = (a.min(b), a.max(b));
    for c in &mut canvas[lo + 1..hi] {
        *c = body;
    }
    if b > a {
        canvas[hi - 1] = '>';
    } else {
        canvas[lo + 1] = '<';
    }
    // The label sits in the middle, with a space either side, cut if it must.
    let inner = (hi - lo).saturating_sub(5);
    let label: String = label.chars().take(inner.saturating_sub(2)).collect();
    if label.is_empty() {
        return;
    }
    let text = format!(" {label} ");
    let start = lo + 1 + (hi - lo - 1).saturating_sub(text.chars().count()) / 2;
    for (k, c) in text.chars().enumerate() {
        if let Some(slot) = canvas.get_mut(start + k) {
            *slot = c;
        }
    }
}

fn push_line(out: &mut String, canvas: &[char]) {
    let line: String = canvas.iter().collect();
    let _ = writeln!(out, "{}", line.trim_end());
}

/// Greedy word wrap; a word longer than the line is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let rest = word.split_off(width);
            lines.push(word);
            word = rest;
        }
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_words() {
        assert_eq!(wrap("a bb ccc dddd", 8), vec!["a bb ccc", "dddd"]);
        assert_eq!(wrap("abcdefghijkl", 8), vec!["abcdefgh", "ijkl"]);
    }
}

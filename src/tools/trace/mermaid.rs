//! The story as a Mermaid sequence diagram: a participant per node, arrows for
//! requests and replies, notes for decisions, a green band while a lock is held.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header;
use super::story::{Item, Model};

/// Text safe after `:` in Mermaid: `#` starts a comment or an entity, `;` ends
/// a statement, and a line break ends the line; `<`/`>` could open a tag.
fn mermaid_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '#' | '<' | '>' | '\n' | '\r' | '\t' => ' ',
            ';' => ',',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect()
}

fn mermaid_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| mermaid_text(l))
        .collect::<Vec<_>>()
        .join("<br>")
}

pub(super) fn render(model: &Model) -> String {
    let alias: HashMap<SocketAddr, String> = model
        .participants
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, format!("N{}", i + 1)))
        .collect();
    let name = |addr: &SocketAddr| alias.get(addr).cloned().unwrap_or_else(|| "N0".to_string());
    let mut out = String::from("sequenceDiagram\n");
    for line in header(model) {
        let _ = writeln!(out, "    %% {line}");
    }
    for p in &model.participants {
        let _ = writeln!(
            out,
            "    participant {} as {}",
            name(p),
            mermaid_text(&p.to_string())
        );
    }
    let wide = match (model.participants.first(), model.participants.last()) {
        (Some(a), Some(b)) if a != b => format!("{},{}", name(a), name(b)),
        (Some(a), _) => name(a),
        _ => String::new(),
    };
    let mut depth = 1;
    let pad = |depth: usize| "    ".repeat(depth);
    let note_over = |out: &mut String, depth: usize, over: &str, lines: &[String]| {
        let _ = writeln!(
            out,
            "{}Note over {over}: {}",
            pad(depth),
            mermaid_lines(lines)
        );
    };
    for row in &model.rows {
        match &row.item {
            Item::Arrow {
                from,
                to,
                label,
                reply,
            } => {
                let arrow = if *reply { "-->>" } else { "->>" };
                let _ = writeln!(
                    out,
                    "{}{}{arrow}{}: {}",
                    pad(depth),
                    name(from),
                    name(to),
                    mermaid_text(label)
                );
            }
            Item::Note { at, lines } => {
                note_over(&mut out, depth, &name(at), lines);
            }
            Item::Wide { lines } => {
                if !wide.is_empty() {
                    note_over(&mut out, depth, &wide, lines);
                }
            }
            Item::Enter { at, lines, rect } => {
                if *rect {
                    let _ = writeln!(out, "{}rect rgba(40, 160, 40, 0.15)", pad(depth));
                    depth += 1;
                }
                let _ = writeln!(out, "{}activate {}", pad(depth), name(at));
                note_over(&mut out, depth, &name(at), lines);
            }
            Item::Exit {
                at,
                lines,
                active,
                rect,
            } => {
                note_over(&mut out, depth, &name(at), lines);
                if *active {
                    let _ = writeln!(out, "{}deactivate {}", pad(depth), name(at));
                }
                if *rect && depth > 1 {
                    depth -= 1;
                    let _ = writeln!(out, "{}end", pad(depth));
                }
            }
            Item::Release { at, rect } => {
                let _ = writeln!(out, "{}deactivate {}", pad(depth), name(at));
                if *rect && depth > 1 {
                    depth -= 1;
                    let _ = writeln!(out, "{}end", pad(depth));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mermaid_text_drops_special_characters() {
        assert_eq!(mermaid_text("REQUEST #1; x<y"), "REQUEST  1, x y");
    }
}

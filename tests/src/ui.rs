//! Diagnostics tests: each `tests/ui/*.tile` file marks the lines that must get an error with
//! `//~ ERROR text`; every marked line must get an error containing the text, every error must
//! be on a marked line, and the rendered messages are snapshotted.

use crate::common::{root, tile_files};
use tessera_compiler::{Options, Source};

#[test]
fn ui_diagnostics() {
    let files = tile_files("tests/ui");
    assert!(!files.is_empty(), "no ui tests found");
    let mut failures = vec![];
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&f).expect("read ui file");
        let expected: Vec<(usize, String)> =
            text.lines().enumerate().filter_map(|(i, l)| l.split_once("//~ ERROR ").map(|(_, m)| (i + 1, m.trim().to_string()))).collect();
        assert!(!expected.is_empty(), "{name} has no `//~ ERROR` annotation");
        // Located on disk, so that `use "imports/…"` resolves next to the test.
        let src = Source::new(format!("tests/ui/{name}"), text.clone()).with_path(&f);
        let o = Options { verify: true, ..Options::default() };
        let diags = match tessera_compiler::compile(&src, &o) {
            Ok(_) => {
                failures.push(format!("{name}: compiled without errors"));
                continue;
            }
            Err(d) => d,
        };
        let got: Vec<(usize, String)> = diags
            .items
            .iter()
            .map(|d| (d.span().map(|s| diags.sources.line_col(s.file, s.start).0).unwrap_or(0), d.message.clone()))
            .collect();
        for (line, msg) in &expected {
            if !got.iter().any(|(l, m)| l == line && m.contains(msg.as_str())) {
                failures.push(format!("{name}:{line}: expected an error containing `{msg}`; got {got:?}"));
            }
        }
        for (line, msg) in &got {
            if !expected.iter().any(|(l, _)| l == line) {
                failures.push(format!("{name}:{line}: unexpected error `{msg}`"));
            }
        }
        let rendered = diags.render();
        assert!(!rendered.contains("internal compiler error"), "{name}: internal compiler error:\n{rendered}");
        insta::assert_snapshot!(format!("ui.{}", name.trim_end_matches(".tile")), rendered);
    }
    let _ = root();
    assert!(failures.is_empty(), "ui test failures:\n{}", failures.join("\n"));
}

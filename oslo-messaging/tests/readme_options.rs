//! The README's table of RabbitMQ driver options is the configuration's own list: every option,
//! its type, default and meaning. When an option changes, this test prints the new table.

use oslo_messaging::config::RabbitOptions;

fn table() -> String {
    let mut out = String::from("| Option | Type | Default | Meaning |\n|---|---|---|---|\n");
    for o in RabbitOptions::options() {
        let default = match o.name {
            "hostname" => "this machine's host name".to_owned(),
            "processname" => "this program's file name".to_owned(),
            _ if o.default.is_empty() || o.default == "\"\"" => "(empty)".to_owned(),
            _ => format!("`{}`", o.default.trim_matches('"')),
        };
        let mut help = o.help.split_whitespace().collect::<Vec<_>>().join(" ");
        for old in o.deprecated_names {
            help.push_str(&format!(" Also read as `{old}`."));
        }
        out.push_str(&format!(
            "| `{}` | {} | {default} | {help} |\n",
            o.name, o.kind
        ));
    }
    out
}

#[test]
fn readme_lists_every_rabbit_option() {
    let readme = include_str!("../../README.md");
    let start = "<!-- rabbit-options:start -->\n";
    let end = "<!-- rabbit-options:end -->";
    let section = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(s, _)| s);
    let want = table();
    assert_eq!(
        section,
        Some(want.as_str()),
        "README's options table is stale; put this between the markers:\n{want}"
    );
}

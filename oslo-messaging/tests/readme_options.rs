//! The README's tables of RabbitMQ and Kafka driver options are the configuration's own lists:
//! every option, its type, default and meaning. When an option changes, this test prints the
//! new table.

use oslo_messaging::config::{KafkaOptions, OptionInfo, RabbitOptions};

fn table(options: Vec<OptionInfo>) -> String {
    let mut out = String::from("| Option | Type | Default | Meaning |\n|---|---|---|---|\n");
    for o in options {
        let default = match o.name {
            "hostname" => "this machine's host name".to_owned(),
            "processname" => "this program's file name".to_owned(),
            "ssl_client_key_password" => "(empty)".to_owned(),
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

/// The README's table between the `<!-- {marker}:start -->` and `:end` markers is `want`.
fn readme_table_is(marker: &str, want: &str) {
    let readme = include_str!("../../README.md");
    let start = format!("<!-- {marker}:start -->\n");
    let end = format!("<!-- {marker}:end -->");
    let section = readme
        .split_once(start.as_str())
        .and_then(|(_, rest)| rest.split_once(end.as_str()))
        .map(|(s, _)| s);
    assert_eq!(
        section,
        Some(want),
        "README's {marker} table is stale; put this between the markers:\n{want}"
    );
}

#[test]
fn readme_lists_every_rabbit_option() {
    readme_table_is("rabbit-options", &table(RabbitOptions::options()));
}

#[test]
fn readme_lists_every_kafka_option() {
    readme_table_is("kafka-options", &table(KafkaOptions::options()));
}

//! A private three-node RabbitMQ cluster (the reliability reference's recipe, section 3.2):
//! nodes on their own ports sharing one Erlang cookie, joined to the first, with
//! `pause_minority` partition handling. Stopped and deleted on drop.

use std::time::Instant;

use crate::node::Node;

/// A running cluster of three nodes.
pub struct Cluster {
    /// The members; index 0 is the one the others joined.
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// Starts nodes `<tag>1..3` on `first_port..first_port + 3` and joins them (about 40 s).
    pub fn start(tag: &str, first_port: u16) -> Self {
        let started = Instant::now();
        let cookie = format!("oslocluster{}{tag}", std::process::id());
        let nodes: Vec<Node> = (0..3u16)
            .map(|i| {
                Node::prepare(
                    &format!("{tag}{}", i + 1),
                    first_port + i,
                    "cluster_partition_handling = pause_minority",
                    &[],
                    Some(&cookie),
                )
            })
            .collect();
        for n in &nodes {
            n.spawn();
        }
        for n in &nodes {
            n.wait_up(started);
        }
        let first = nodes[0].name().to_owned();
        for n in &nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["reset"],
                vec!["join_cluster", first.as_str()],
                vec!["start_app"],
            ] {
                n.ctl(&args)
                    .unwrap_or_else(|e| panic!("{} {args:?}: {e}", n.name()));
            }
        }
        let cluster = Self { nodes };
        let running = cluster.running();
        assert_eq!(running, 3, "{running} of 3 nodes running");
        eprintln!(
            "cluster {tag} of 3 nodes up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        cluster
    }

    /// How many members a live member sees running.
    pub fn running(&self) -> usize {
        for n in &self.nodes {
            if let Ok(out) = n.ctl(&["-q", "cluster_status", "--formatter", "json"]) {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                return v["running_nodes"].as_array().map_or(0, Vec::len);
            }
        }
        0
    }

    /// A URL naming every member (the driver shuffles it, as Python does).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("guest:guest@127.0.0.1:{}", n.port))
            .collect();
        format!("rabbit://{}/", hosts.join(","))
    }

    /// The index of the node leading quorum queue `queue`, asked of any live member.
    pub fn leader_of(&self, queue: &str) -> Option<usize> {
        for n in &self.nodes {
            let Ok(out) = n.ctl(&["-q", "list_queues", "name", "leader", "--formatter", "json"])
            else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let leader = v.as_array()?.iter().find(|q| q["name"] == queue)?["leader"]
                .as_str()?
                .to_owned();
            return self.nodes.iter().position(|m| m.name() == leader);
        }
        None
    }

    /// Whether every quorum queue has all the cluster's members online: a restarted member
    /// has caught up and votes again, so killing another member leaves a majority that can
    /// elect a leader at once.
    pub fn quorum_queues_whole(&self) -> bool {
        let Ok(out) = self.ctl(&[
            "-q",
            "list_queues",
            "name",
            "type",
            "online",
            "--formatter",
            "json",
        ]) else {
            return false;
        };
        let Ok(serde_json::Value::Array(queues)) = serde_json::from_str(&out) else {
            return false;
        };
        queues.iter().filter(|q| q["type"] == "quorum").all(|q| {
            q["online"]
                .as_array()
                .is_some_and(|members| members.len() == self.nodes.len())
        })
    }

    /// Runs rabbitmqctl on the first live member.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut last = String::from("no member answers");
        for n in &self.nodes {
            match n.ctl(args) {
                Ok(out) => return Ok(out),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

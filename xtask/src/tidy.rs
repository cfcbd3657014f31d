//! Repository checks that run as ordinary tests (`cargo test -p xtask`).

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::Command;

    use crate::shared::workspace_root;

    /// Workspace package name -> the workspace packages it depends on (normal deps only).
    fn internal_edges() -> BTreeMap<String, Vec<String>> {
        let out = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(workspace_root())
            .output()
            .expect("cargo metadata runs");
        assert!(out.status.success(), "cargo metadata failed");
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid json");
        let packages = meta["packages"].as_array().expect("packages");
        let names: Vec<String> = packages
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        packages
            .iter()
            .map(|p| {
                let deps = p["dependencies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["kind"].is_null())
                    .filter_map(|d| d["name"].as_str())
                    .filter(|n| names.iter().any(|m| m == n))
                    .map(str::to_string)
                    .collect();
                (p["name"].as_str().unwrap().to_string(), deps)
            })
            .collect()
    }

    #[test]
    fn dependencies_point_one_way() {
        let edges = internal_edges();
        let leaves = ["strata-parser", "strata-store", "strata-overlay"];
        for leaf in leaves {
            let deps = &edges[leaf];
            assert!(
                deps.is_empty(),
                "{leaf} must not depend on another workspace crate, but depends on {deps:?}"
            );
        }
        let builder = &edges["strata-builder"];
        assert!(
            !builder.iter().any(|d| d == "strata"),
            "strata-builder must not depend on the cli"
        );
    }

    #[test]
    fn every_crate_has_its_own_version_and_readme() {
        let root = workspace_root();
        for krate in ["parser", "store", "overlay", "builder", "cli"] {
            let dir = root.join("crates").join(krate);
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(
                manifest.contains("\nversion = \""),
                "crates/{krate} must carry its own version"
            );
            assert!(
                dir.join("README.md").is_file(),
                "crates/{krate} needs a README.md"
            );
        }
    }
}

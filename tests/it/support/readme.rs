//! The README's shell blocks, as the tests that run them verbatim read them.

/// The fenced `sh` block under the README heading `heading`, one command per
/// line (comment lines dropped, `\` continuations joined), each preceded by
/// the block's variable assignments.
pub fn readme_commands(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(super::tools::repo().join("README.md")).expect("README.md");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has {heading:?}"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("a sh block")
        .split("```")
        .next()
        .unwrap();
    let mut commands = Vec::new();
    let mut assignments = String::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap().trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                let command = std::mem::take(&mut pending);
                let is_assignment = command
                    .split_once('=')
                    .is_some_and(|(name, _)| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
                if is_assignment {
                    assignments.push_str(&command);
                    assignments.push('\n');
                } else {
                    commands.push(command);
                }
            }
        }
    }
    commands
        .into_iter()
        .map(|command| format!("{assignments}{command}"))
        .collect()
}

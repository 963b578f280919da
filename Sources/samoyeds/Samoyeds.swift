import ArgumentParser

/// The `samoyeds` command-line tool.
@main
struct Samoyeds: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "samoyeds",
    abstract: "Mixture-of-Experts inference on dual-side structured sparsity.",
    discussion: """
      Expert weights pruned to the N:M:V + 2:4 format, multiplied with the token \
      rows the router selects (read through index lists, never gathered). \
      Format spec: docs/FORMAT.md.
      """,
    version: "0.1.0",
    subcommands: [Demo.self, Info.self, Verify.self, Bench.self, Prune.self, Inspect.self, MakeCheckpoint.self],
    defaultSubcommand: nil
  )
}

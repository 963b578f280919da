#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Runs a program found on PATH with `arguments`, stdout and stderr
/// captured together (through a temporary file), and waits for it. Used by
/// `verify` to call the transformers reference (`bench/baselines/compare_hf.py`).
/// Foundation's `Process` is not in FoundationEssentials, hence posix_spawn.
func runProgram(_ arguments: [String]) -> (status: Int32, output: String)? {
  guard let program = arguments.first else { return nil }
  let capture = FileManager.default.temporaryDirectory.path + "/samoyeds-subprocess-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
  defer { unlink(capture) }
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  posix_spawn_file_actions_addopen(&actions, 1, capture, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
  posix_spawn_file_actions_adddup2(&actions, 1, 2)
  var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  guard posix_spawnp(&pid, program, &actions, nil, &argv, environ) == 0 else { return nil }
  var status: Int32 = 0
  while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
  let output = FileManager.default.contents(atPath: capture).map { String(decoding: $0, as: UTF8.self) } ?? ""
  // WIFEXITED / WEXITSTATUS by hand (macros do not import): low 7 bits 0 = exited.
  let exited = status & 0x7f == 0
  return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
}

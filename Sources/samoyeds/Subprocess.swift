#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Runs a program found on PATH with `arguments`, stdout and stderr
/// captured together (through a fresh temporary file), stdin from
/// /dev/null, and waits for it. Returns nil when it could not be started or
/// waited for. Used by `verify` to call the transformers reference
/// (`bench/baselines/compare_hf.py`). Foundation's `Process` is not in
/// FoundationEssentials, hence posix_spawn.
func runProgram(_ arguments: [String]) -> (status: Int32, output: String)? {
  guard let program = arguments.first else { return nil }
  let capture =
    FileManager.default.temporaryDirectory.path + "/samoyeds-subprocess-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log"
  // Created here (exclusively, not through a link) so the child only opens an existing file.
  let fd = open(capture, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
  guard fd >= 0 else { return nil }
  close(fd)
  defer { unlink(capture) }
  var actions = posix_spawn_file_actions_t()
  guard posix_spawn_file_actions_init(&actions) == 0 else { return nil }
  defer { posix_spawn_file_actions_destroy(&actions) }
  guard posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) == 0,
    posix_spawn_file_actions_addopen(&actions, 1, capture, O_WRONLY | O_TRUNC | O_NOFOLLOW, 0) == 0,
    posix_spawn_file_actions_adddup2(&actions, 1, 2) == 0
  else { return nil }
  var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
  defer { for pointer in argv { free(pointer) } }
  var pid: pid_t = 0
  guard posix_spawnp(&pid, program, &actions, nil, &argv, environ) == 0 else { return nil }
  var status: Int32 = 0
  while true {
    if waitpid(pid, &status, 0) == pid { break }
    if errno != EINTR { return nil }  // not waitable (e.g. SIGCHLD ignored): no status to trust
  }
  let output = FileManager.default.contents(atPath: capture).map { String(decoding: $0, as: UTF8.self) } ?? ""
  // WIFEXITED / WEXITSTATUS by hand (the macros do not import): low 7 bits 0 = exited.
  let exited = status & 0x7f == 0
  return (exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output)
}

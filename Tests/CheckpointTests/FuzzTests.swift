import Testing

@testable import Checkpoint
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Property test over random mutations of valid safetensors files: the
/// parser either accepts the file, and then every tensor lies inside it and
/// reads back, or throws a CheckpointError. Never a crash. (No mutation has
/// crashed it so far; the crafted cases in `BadFiles` are the regression
/// corpus of inputs that once were worth a dedicated check.)
@Suite struct HeaderFuzz {
  @Test func randomMutationsNeverCrash() throws {
    var rng = SeededGenerator(seed: 2024)
    let sparse = try SparseMatrix<Float>.prune(
      rng.normalMatrix(rows: 4, columns: 64), pattern: try SparsePattern(parsing: "1:2:32"))
    var writer = SafeTensorsWriter()
    try SparseTensorIO.add(sparse, named: "w", to: &writer)
    try writer.add("extra", dtype: .bf16, shape: [3, 5], elements: [UInt16](repeating: 0x3F80, count: 15))
    let valid = try writer.serialized()
    var accepted = 0
    for trial in 0..<3000 {
      var data = valid
      let kind = Int.random(in: 0..<5, using: &rng)
      let headerEnd = min(data.count, 8 + Int(data[0]) + Int(data[1]) << 8)
      switch kind {
      case 0:  // flip bits in the header
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
          let i = Int.random(in: 0..<headerEnd, using: &rng)
          data[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
        }
      case 1:  // truncate
        data = data.prefix(Int.random(in: 0..<data.count, using: &rng))
      case 2:  // replace a header digit
        let digits = (8..<headerEnd).filter { data[$0] >= 0x30 && data[$0] <= 0x39 }
        if let i = digits.randomElement(using: &rng) { data[i] = UInt8.random(in: 0x30...0x39, using: &rng) }
      case 3:  // insert random bytes
        let i = Int.random(in: 0..<data.count, using: &rng)
        data.insert(contentsOf: (0..<Int.random(in: 1...16, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: i)
      default:  // random length prefix
        for i in 0..<8 { data[i] = UInt8.random(in: 0...255, using: &rng) }
      }
      do {
        let file = try SafeTensorsFile(data: data, path: "fuzz-\(trial)")
        accepted += 1
        for (name, info) in file.tensors {
          #expect(info.dataRange.upperBound <= data.count, "trial \(trial)")
          _ = try? file.withBytes(name) { $0.count }
        }
        for name in SparseTensorIO.sparseNames(in: file) { _ = try? SparseTensorIO.read(name, from: file) }
      } catch is CheckpointError {
        // the expected outcome for most mutations
      } catch {
        Issue.record("trial \(trial): unexpected error type \(error)")
      }
    }
    print("fuzz: \(accepted) of 3000 mutated files parsed, the rest rejected cleanly")
  }
}

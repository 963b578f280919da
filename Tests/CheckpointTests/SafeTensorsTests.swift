import Testing

@testable import Checkpoint
import SamoyedsFormat

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A fresh temporary folder per test.
func temporaryFolder(_ name: String) throws -> String {
  let path = FileManager.default.temporaryDirectory.path + "/samoyeds-tests-\(name)-\(UInt64.random(in: 0...UInt64.max))"
  try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  return path
}

@Suite struct SparseRoundTrip {
  @Test func densifiedPruneSurvivesSaveAndLoadExactly() throws {
    let folder = try temporaryFolder("roundtrip")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    for (index, patternText) in ["1:2:128", "1:4:64", "3:8:32"].enumerated() {
      let seed = UInt64(100 + index)
      var rng = SeededGenerator(seed: seed)
      let pattern = try SparsePattern(parsing: patternText)
      let weight = rng.normalMatrix(rows: pattern.groupRows * 6, columns: pattern.vectorLength * 2)
      let f32 = try SparseMatrix<Float>.prune(weight, pattern: pattern)
      let bf16 = try SparseMatrix<BFloat16>.prune(Matrix<BFloat16>.rounding(weight), pattern: pattern)
      let fp16 = try SparseMatrix<Float16>.prune(Matrix<Float16>.rounding(weight), pattern: pattern)
      var writer = SafeTensorsWriter()
      try SparseTensorIO.add(f32, named: "layers.0.w1", to: &writer)
      try SparseTensorIO.add(bf16, named: "layers.0.w2", to: &writer)
      try SparseTensorIO.add(fp16, named: "layers.0.w3", to: &writer)
      try writer.add("router", dtype: .f32, shape: [2, 3], elements: [Float](repeating: 0.5, count: 6))
      let path = "\(folder)/\(index).safetensors"
      try writer.write(to: path)

      let file = try SafeTensorsFile(path: path)
      #expect(SparseTensorIO.sparseNames(in: file) == ["layers.0.w1", "layers.0.w2", "layers.0.w3"])
      guard case .f32(let f32Back) = try SparseTensorIO.read("layers.0.w1", from: file),
        case .bf16(let bf16Back) = try SparseTensorIO.read("layers.0.w2", from: file),
        case .fp16(let fp16Back) = try SparseTensorIO.read("layers.0.w3", from: file)
      else {
        Issue.record("wrong dtypes back, seed \(seed)")
        continue
      }
      #expect(f32Back == f32 && f32Back.densified() == f32.densified(), "seed \(seed)")
      #expect(bf16Back == bf16 && bf16Back.densified() == bf16.densified(), "seed \(seed)")
      #expect(fp16Back == fp16, "seed \(seed)")
      let router: [Float] = try file.array("router", as: .f32)
      #expect(router == [Float](repeating: 0.5, count: 6))
    }
  }
}

@Suite struct BadFiles {
  func validFile() throws -> Data {
    var rng = SeededGenerator(seed: 9)
    let sparse = try SparseMatrix<Float>.prune(
      rng.normalMatrix(rows: 4, columns: 64), pattern: try SparsePattern(parsing: "1:2:32"))
    var writer = SafeTensorsWriter()
    try SparseTensorIO.add(sparse, named: "w", to: &writer)
    return try writer.serialized()
  }

  /// A file with the given header JSON and `dataBytes` bytes of data.
  func file(header: String, dataBytes: Int) -> Data {
    var json = Data(header.utf8)
    while json.count % 8 != 0 { json.append(0x20) }
    var data = Data()
    var length = UInt64(json.count)
    for _ in 0..<8 {
      data.append(UInt8(length & 0xFF))
      length >>= 8
    }
    return data + json + Data(repeating: 1, count: dataBytes)
  }

  func expectMalformed(_ data: Data, containing: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(sourceLocation: sourceLocation) {
      try SafeTensorsFile(data: data, path: "x.safetensors")
    } throws: { error in
      guard let error = error as? CheckpointError else { return false }
      return error.description.contains(containing) && error.description.contains("x.safetensors")
    }
  }

  @Test func truncatedAndLyingFilesAreRejected() throws {
    let good = try validFile()
    _ = try SafeTensorsFile(data: good, path: "x.safetensors")
    expectMalformed(good.prefix(5), containing: "shorter than")
    expectMalformed(good.prefix(40), containing: "runs past the end")
    // Cut the data section: the last tensor's offsets now point outside.
    expectMalformed(good.dropLast(3), containing: "outside")
    // Header length claiming more than 100 MB.
    var huge = good
    huge[huge.startIndex + 6] = 0x7F
    expectMalformed(huge, containing: "limit")
    expectMalformed(file(header: "{not json", dataBytes: 0), containing: "not a JSON object")
    expectMalformed(
      file(header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}"#, dataBytes: 12),
      containing: "needs 8 bytes")
    expectMalformed(
      file(
        header:
          #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
        dataBytes: 12), containing: "overlap")
    expectMalformed(
      file(header: #"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}"#, dataBytes: 0),
      containing: "negative")
    // Regression (found by review): a shape whose element count fits but whose
    // byte count overflows used to trap while building the error message.
    expectMalformed(
      file(header: #"{"a": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]}}"#, dataBytes: 8),
      containing: "overflows")
    #expect {
      try SafeTensorsFile(
        data: file(header: #"{"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}"#, dataBytes: 2),
        path: "x.safetensors")
    } throws: { error in
      guard case CheckpointError.unsupportedDType(let text) = error else { return false }
      return text.contains("'a'") && text.contains("F8_E4M3")
    }
  }

  @Test func sparseTensorsWithBrokenContentsAreRejected() throws {
    let good = try SafeTensorsFile(data: try validFile(), path: "x.safetensors")
    #expect(throws: CheckpointError.self) { try SparseTensorIO.read("missing", from: good) }
    #expect(throws: CheckpointError.self) { try good.array("w.values", as: .bf16, UInt16.self) }

    // Metadata words that break the 2:4 ordering are caught on load.
    var rng = SeededGenerator(seed: 10)
    let sparse = try SparseMatrix<Float>.prune(
      rng.normalMatrix(rows: 4, columns: 64), pattern: try SparsePattern(parsing: "1:2:32"))
    var writer = SafeTensorsWriter()
    try writer.add("w.values", dtype: .f32, shape: [2, 32], elements: sparse.values)
    try writer.add("w.metadata", dtype: .u32, shape: [2, 2], elements: [UInt32](repeating: 0, count: 4))
    try writer.add("w.row_select", dtype: .u8, shape: [2, 2], elements: sparse.rowSelection)
    writer.metadata["samoyeds.sparse.w"] = #"{"pattern":"1:2:32","rows":4,"columns":64}"#
    let broken = try SafeTensorsFile(data: try writer.serialized(), path: "b.safetensors")
    #expect {
      try SparseTensorIO.read("w", from: broken)
    } throws: { error in
      guard case CheckpointError.format(let text) = error else { return false }
      return text.contains("b.safetensors") && text.contains("'w'") && text.contains("condensed row 0")
    }
    // A descriptor whose shape disagrees with the tensors.
    writer.metadata["samoyeds.sparse.w"] = #"{"pattern":"1:2:32","rows":8,"columns":64}"#
    let lying = try SafeTensorsFile(data: try writer.serialized(), path: "c.safetensors")
    #expect {
      try SparseTensorIO.read("w", from: lying)
    } throws: { error in
      guard case CheckpointError.shapeMismatch(let text) = error else { return false }
      return text.contains("w.values")
    }
  }

  @Test func failedWritesLeaveNothingBehind() throws {
    let folder = try temporaryFolder("atomic")
    defer { try? FileManager.default.removeItem(atPath: folder) }
    var writer = SafeTensorsWriter()
    try writer.add("a", dtype: .u8, shape: [3], elements: [UInt8(1), 2, 3])
    #expect(throws: CheckpointError.self) { try writer.write(to: "\(folder)/no/such/dir/a.safetensors") }
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    #expect(throws: CheckpointError.self) { try writer.add("a", dtype: .u8, shape: [1], elements: [UInt8(1)]) }
    #expect(throws: CheckpointError.self) { try writer.add("b", dtype: .u8, shape: [2], elements: [UInt8(1)]) }
    #expect(throws: CheckpointError.self) { try writer.add("c", dtype: .f32, shape: [1], elements: [UInt8(1)]) }
  }
}

// swift-tools-version: 6.0
//
// Samoyeds: Mixture-of-Experts inference on structured sparsity of both
// operands (pruned expert weights x router-selected token rows).
//
// Layers go one way (nothing imports upward):
//   SamoyedsFormat, SamoyedsModel    pure Swift: the format, configurations
//   Checkpoint                       files (safetensors), depends on the format
//   CPUEngine                        reference/fallback engine
//   CUDA                             run-time loaded CUDA libraries (dlopen)
//   Kernels, GPUEngine               GPU kernels and the GPU MoE layer
//   samoyeds                         the command-line tool
// SamoyedsFormat, SamoyedsModel, Checkpoint and CPUEngine never import CUDA.

import PackageDescription

// MARK: - Shared settings

let strictSwift: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
]

// MARK: - Package

let package = Package(
  name: "Samoyeds",
  products: [
    .library(name: "SamoyedsFormat", targets: ["SamoyedsFormat"]),
    .library(name: "SamoyedsModel", targets: ["SamoyedsModel"]),
    .library(name: "Checkpoint", targets: ["Checkpoint"]),
    .library(name: "CPUEngine", targets: ["CPUEngine"]),
    .library(name: "Models", targets: ["Models"]),
    .library(name: "CUDA", targets: ["CUDA"]),
    .library(name: "Kernels", targets: ["Kernels"]),
    .library(name: "GPUEngine", targets: ["GPUEngine"]),
    .executable(name: "samoyeds", targets: ["samoyeds"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-numerics", from: "1.1.1"),
  ],
  targets: [
    // MARK: Pure Swift core
    .target(
      name: "SamoyedsFormat",
      dependencies: [.product(name: "RealModule", package: "swift-numerics")],
      swiftSettings: strictSwift
    ),
    .target(
      name: "SamoyedsModel",
      swiftSettings: strictSwift
    ),
    .target(
      name: "Checkpoint",
      dependencies: ["SamoyedsFormat", "SamoyedsModel"],
      swiftSettings: strictSwift
    ),
    .target(
      name: "CPUEngine",
      dependencies: [
        "SamoyedsFormat", "SamoyedsModel",
        .product(name: "RealModule", package: "swift-numerics"),
      ],
      swiftSettings: strictSwift
    ),

    .target(
      name: "Models",
      dependencies: ["SamoyedsFormat", "SamoyedsModel", "Checkpoint", "CPUEngine"],
      swiftSettings: strictSwift
    ),

    // MARK: GPU (loaded at run time; builds without CUDA)
    .target(
      name: "CUDA",
      swiftSettings: strictSwift
    ),

    .target(
      name: "Kernels",
      dependencies: ["CUDA", "SamoyedsFormat"],
      exclude: ["Resources"],
      swiftSettings: strictSwift
    ),

    .target(
      name: "GPUEngine",
      dependencies: ["Kernels", "CUDA", "CPUEngine", "SamoyedsFormat", "SamoyedsModel"],
      swiftSettings: strictSwift
    ),

    // MARK: Command-line tool
    .executableTarget(
      name: "samoyeds",
      dependencies: [
        "SamoyedsFormat", "SamoyedsModel", "Checkpoint", "CPUEngine", "CUDA", "Kernels", "GPUEngine", "Models",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: strictSwift
    ),

    // MARK: Tests
    .testTarget(
      name: "SamoyedsFormatTests",
      dependencies: ["SamoyedsFormat"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "SamoyedsModelTests",
      dependencies: ["SamoyedsModel"],
      exclude: ["Fixtures"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "CheckpointTests",
      dependencies: ["Checkpoint", "SamoyedsFormat"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "ModelsTests",
      dependencies: ["Models", "Checkpoint", "CPUEngine", "SamoyedsFormat", "SamoyedsModel"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "KernelsTests",
      dependencies: ["Kernels", "CUDA", "SamoyedsFormat"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "GPUEngineTests",
      dependencies: ["GPUEngine", "CPUEngine", "CUDA", "Kernels", "SamoyedsFormat", "SamoyedsModel"],
      swiftSettings: strictSwift
    ),
    .testTarget(
      name: "CPUEngineTests",
      dependencies: ["CPUEngine", "SamoyedsFormat", "SamoyedsModel"],
      swiftSettings: strictSwift
    ),
  ]
)

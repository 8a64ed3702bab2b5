// SwiftPM links an executable with `main` renamed to `realtime_fuzz_main` (testable
// executables); with -parse-as-library the Swift module defines no entry point, so this one
// hands control to libFuzzer's driver, which calls LLVMFuzzerTestOneInput (Targets.swift).
#include <stddef.h>
#include <stdint.h>
#include "entry.h"

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int realtime_fuzz_main(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}

// The fuzzer binary's entry point (entry.c).
int realtime_fuzz_main(int argc, char **argv);

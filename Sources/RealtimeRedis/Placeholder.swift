public enum RealtimeRedisPlaceholder {}

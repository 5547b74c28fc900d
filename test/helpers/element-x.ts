// Element X's two simplified-sliding-sync request bodies, as matrix-rust-sdk 0.18.0 sends them
// from one device (shared by the integration and the real-Synapse tests).

// RoomListService (room_list_service/mod.rs): account_data, receipts and typing extensions, the
// all_rooms list with DEFAULT_REQUIRED_STATE; no e2ee.
export const roomListRequest = {
  conn_id: "room-list",
  lists: {
    all_rooms: {
      ranges: [[0, 19]],
      required_state: [
        ["m.room.name", ""],
        ["m.room.encryption", ""],
        ["m.room.member", "$LAZY"],
        ["m.room.member", "$ME"],
        ["m.room.topic", ""],
        ["m.room.avatar", ""],
        ["m.room.canonical_alias", ""],
        ["m.room.power_levels", ""],
        ["org.matrix.msc3401.call.member", "*"],
        ["m.room.join_rules", ""],
        ["m.room.tombstone", ""],
        ["m.room.create", ""],
        ["m.room.history_visibility", ""],
        ["io.element.functional_members", ""],
        ["m.space.parent", "*"],
        ["m.space.child", "*"],
        ["m.beacon_info", "*"],
      ],
      timeline_limit: 1,
      filters: {},
    },
  },
  extensions: { account_data: { enabled: true }, receipts: { enabled: true, rooms: ["*"] }, typing: { enabled: true } },
};

// EncryptionSyncService (encryption_sync_service.rs): to_device and e2ee enabled, nothing else.
export const encryptionRequest = (toDeviceSince?: string) => ({
  conn_id: "encryption",
  extensions: {
    to_device: { enabled: true, ...(toDeviceSince ? { since: toDeviceSince } : {}) },
    e2ee: { enabled: true },
  },
});

/** The `chat` process spawner lives in test/helpers; this path still resolves for the tests that import it here. */
export * from "../helpers/chat-process";

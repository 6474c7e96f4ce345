import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";

export const MYSQL_ADMIN_URL = process.env.TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306";

export interface TestDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

/** Creates a database of its own for one test run on the real MariaDB; drop() removes it. */
export async function createTestDatabase(prefix = "chat_test"): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  const admin = await mysql.createConnection(MYSQL_ADMIN_URL);
  await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
  await admin.end();
  return {
    name,
    url: `${MYSQL_ADMIN_URL}/${name}`,
    drop: async () => {
      const conn = await mysql.createConnection(MYSQL_ADMIN_URL);
      await conn.query(`DROP DATABASE IF EXISTS \`${name}\``);
      await conn.end();
    },
  };
}
